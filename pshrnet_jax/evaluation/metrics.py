"""Re-ID evaluation: protocols, AP conventions, mINP, per-factor results.

Both conventions remove gallery entries with the query's identity AND camera
and rank by ascending distance:

| | `torchreid` (default) | `released` (PS-HRNet's released code) |
|---|---|---|
| AP | non-interpolated: mean over positives of precision at each positive | trapezoid: mean over positives of (precision before + precision at)/2, precision before the first rank counts as 1 |
| queries with no kept positive | skipped | count as 0 |
| CMC and mAP averaged over | valid queries | all queries |
| gallery pid -1 (junk) | kept | removed |

mINP (fast-reid) is averaged over valid queries in both. `multi_shot`
(Market-1501, DukeMTMC-reID) ranks the whole gallery; `single_shot`
(MLR-CUHK03, MLR-VIPeR, CAVIAR) keeps one random gallery image per identity,
the same for all queries of a trial, over seeded trials (mean, per-trial
values and their spread). `evaluate_rank` is torchreid's evaluator, with its
numbers.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from pshrnet_jax.errors import RankInputError
from pshrnet_jax.evaluation import rank_engine

__all__ = ["PROTOCOLS", "AP_CONVENTIONS", "RankInputError", "RankResult",
           "TrialStats", "evaluate", "evaluate_features", "evaluate_rank",
           "evaluate_rows", "image_camids"]

PROTOCOLS = ("multi_shot", "single_shot")
AP_CONVENTIONS = ("torchreid", "released")


@dataclasses.dataclass(frozen=True)
class TrialStats:
  """Per-trial values of a single-shot evaluation: cmc (trials, max_rank)
  float32; mAP, mINP, num_valid_queries (trials,)."""
  cmc: np.ndarray
  mAP: np.ndarray
  mINP: np.ndarray
  num_valid_queries: np.ndarray

  @property
  def cmc_std(self) -> np.ndarray:
    """Standard deviation of each CMC rank over trials (population, ddof=0)."""
    return self.cmc.std(axis=0)

  @property
  def mAP_std(self) -> float:
    return float(self.mAP.std())


@dataclasses.dataclass(frozen=True)
class RankResult:
  """Metrics of one evaluation (fractions in [0, 1], not percent).

  Attributes:
    cmc: (max_rank,) float32; cmc[k-1] is rank-k accuracy (single shot: mean
      over trials).
    mAP: mean average precision in the chosen convention.
    mINP: mean inverse negative penalty over valid queries.
    num_valid_queries: queries with a kept positive (single shot: the fewest
      over trials).
    num_queries: all queries evaluated.
    protocol: "multi_shot" or "single_shot".
    ap_convention: "torchreid" or "released".
    trials: per-trial values for single shot, else None.
    per_factor: LR factor -> RankResult of the queries with that factor.
  """
  cmc: np.ndarray
  mAP: float
  mINP: float
  num_valid_queries: int
  num_queries: int
  protocol: str
  ap_convention: str
  trials: Optional[TrialStats] = None
  per_factor: Mapping[int, "RankResult"] = dataclasses.field(
      default_factory=dict)

  def rank(self, k: int) -> float:
    """Rank-k accuracy (1-based k)."""
    return float(self.cmc[k - 1])


def _aggregate(stats: rank_engine.QueryStats, select: np.ndarray, max_rank: int,
               ap_convention: str):
  """(cmc, mAP, mINP, num_valid, num_queries) of the selected queries."""
  valid = stats.valid & select
  num_valid, num_total = int(valid.sum()), int(select.sum())
  if num_valid == 0:
    nan = float("nan")
    return np.full(max_rank, nan, np.float32), nan, nan, 0, num_total
  first_rank = stats.first_rank[valid]
  counts = np.cumsum(np.bincount(first_rank[first_rank < max_rank],
                                 minlength=max_rank))
  if ap_convention == "torchreid":
    cmc = counts.astype(np.float32) / float(num_valid)
    m_ap = float(np.mean(stats.ap_torchreid[valid]))
  else:
    cmc = counts.astype(np.float32) / float(num_total)
    m_ap = float(np.sum(stats.ap_released[select]) / num_total)
  return cmc, m_ap, float(np.mean(stats.inp[valid])), num_valid, num_total


def _evaluate_source(shape, distance_block, q_pids, g_pids, q_camids,
                     g_camids, *, max_rank=50, protocol="multi_shot",
                     ap_convention="torchreid", trials=10, seed=0,
                     q_lr_factors=None, chunk_size=None):
  """`evaluate` over `distance_block(q0, q1, gallery columns) -> block`."""
  q_pids, g_pids, q_camids, g_camids = rank_engine.validate_inputs(
      shape, q_pids, g_pids, q_camids, g_camids)
  num_q, num_g = shape
  for name, value, known in (("protocol", protocol, PROTOCOLS),
                             ("ap_convention", ap_convention, AP_CONVENTIONS)):
    if value not in known:
      raise RankInputError(f"unknown {name} {value!r}; use one of {known}")
  subsets = {None: np.ones(num_q, dtype=bool)}  # All queries, then per factor.
  if q_lr_factors is not None:
    q_lr_factors = np.asarray(q_lr_factors)
    if q_lr_factors.shape != (num_q,):
      raise RankInputError(f"q_lr_factors has shape {q_lr_factors.shape}, "
                           f"expected ({num_q},)")
    subsets.update({int(f): q_lr_factors == f
                    for f in np.unique(q_lr_factors)})
  all_cols = np.arange(num_g)
  if ap_convention == "released":
    all_cols = all_cols[g_pids != -1]  # The released code drops junk.
  if len(all_cols) == 0:
    raise RankInputError("empty gallery: no gallery entries left after "
                         "removing junk (pid -1)")
  if protocol == "multi_shot":
    galleries = [all_cols]
  else:
    if trials < 1:
      raise RankInputError(f"single_shot needs trials >= 1, got {trials}")
    rng = np.random.default_rng(seed)
    index = rank_engine.GalleryIndex(g_pids[all_cols], g_camids[all_cols])
    galleries = [np.sort(all_cols[index.order[
        index.starts + rng.integers(0, index.counts)]]) for _ in range(trials)]
  max_rank = min(max_rank, min(len(c) for c in galleries))
  per_trial = {key: [] for key in subsets}
  for cols in galleries:
    stats = rank_engine.query_stats(
        lambda s, e, cols=cols: distance_block(s, e, cols), q_pids,
        g_pids[cols], q_camids, g_camids[cols], chunk_size=chunk_size)
    if not stats.valid.any():
      raise rank_engine.no_valid_query_error(num_q)
    for key, select in subsets.items():
      per_trial[key].append(_aggregate(stats, select, max_rank, ap_convention))

  def result(rows, per_factor):
    cmc, m_ap, m_inp, n_valid, n_total = (np.asarray(v) for v in zip(*rows))
    trial_stats = TrialStats(
        cmc=cmc.astype(np.float32), mAP=m_ap, mINP=m_inp,
        num_valid_queries=n_valid) if protocol == "single_shot" else None
    return RankResult(
        cmc=cmc.mean(axis=0).astype(np.float32), mAP=float(m_ap.mean()),
        mINP=float(m_inp.mean()), num_valid_queries=int(n_valid.min()),
        num_queries=int(n_total[0]), protocol=protocol,
        ap_convention=ap_convention, trials=trial_stats, per_factor=per_factor)

  per_factor = {key: result(rows, {}) for key, rows in per_trial.items()
                if key is not None}
  return result(per_trial[None], per_factor)


def evaluate(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
             q_camids: np.ndarray, g_camids: np.ndarray, *, max_rank: int = 50,
             protocol: str = "multi_shot", ap_convention: str = "torchreid",
             trials: int = 10, seed: int = 0,
             q_lr_factors: Optional[Sequence[int]] = None,
             chunk_size: Optional[int] = None) -> RankResult:
  """CMC, mAP, mINP under a chosen protocol and AP convention.

  Args:
    distmat: (num_query, num_gallery) distances, smaller is closer.
    q_pids: (num_query,) query identities.
    g_pids: (num_gallery,) gallery identities.
    q_camids: (num_query,) query cameras.
    g_camids: (num_gallery,) gallery cameras.
    max_rank: CMC length (clipped to the gallery size).
    protocol: "multi_shot" or "single_shot" (module docstring).
    ap_convention: "torchreid" or "released" (module docstring).
    trials: single-shot trials.
    seed: seed of the single-shot gallery draws (numpy default_rng).
    q_lr_factors: (num_query,) LR factor of each query: adds a per-factor
      breakdown (NaN metrics for a factor whose queries are all invalid).
    chunk_size: queries per chunk (default: about 256 MB per chunk).

  Raises:
    RankInputError: bad shapes, NaN, empty gallery, no valid query, unknown
      protocol or convention.
  """
  distmat = np.asarray(distmat)
  rank_engine.validate_inputs(distmat.shape, q_pids, g_pids, q_camids,
                              g_camids)
  return evaluate_rows(
      lambda s, e: distmat[s:e], q_pids, g_pids, q_camids, g_camids,
      max_rank=max_rank, protocol=protocol, ap_convention=ap_convention,
      trials=trials, seed=seed, q_lr_factors=q_lr_factors,
      chunk_size=chunk_size)


def evaluate_features(q_features: np.ndarray, g_features: np.ndarray,
                      q_pids: np.ndarray, g_pids: np.ndarray,
                      q_camids: np.ndarray, g_camids: np.ndarray, *,
                      metric: str = "cosine", **kwargs) -> RankResult:
  """`evaluate` from features, the distances computed per query chunk only.

  Args:
    q_features: (num_query, dim) query features.
    g_features: (num_gallery, dim) gallery features.
    q_pids, g_pids, q_camids, g_camids: as for `evaluate`.
    metric: "cosine" (1 - dot, for L2-normalised features) or "euclidean"
      (squared, torchreid's default).
    **kwargs: keyword arguments of `evaluate`.
  """
  qf, gf = rank_engine.check_features(q_features, g_features, metric)
  g_sq = np.einsum("ij,ij->i", gf, gf)

  def block(s, e, cols):
    g, gsq = (gf, g_sq) if len(cols) == len(gf) else (gf[cols], g_sq[cols])
    dot = qf[s:e] @ g.T
    if metric == "cosine":
      return 1.0 - dot
    q_sq = np.einsum("ij,ij->i", qf[s:e], qf[s:e])
    return q_sq[:, None] + gsq[None, :] - 2.0 * dot

  return _evaluate_source((len(qf), len(gf)), block, q_pids, g_pids,
                          q_camids, g_camids, **kwargs)


def evaluate_rows(distance_rows: Callable[[int, int], np.ndarray],
                  q_pids: np.ndarray, g_pids: np.ndarray,
                  q_camids: np.ndarray, g_camids: np.ndarray,
                  **kwargs) -> RankResult:
  """`evaluate` over distances computed a block of query rows at a time.

  For computed distances such as `rerank.rerank_features(...).rows`; single
  shot asks for each block once per trial.

  Args:
    distance_rows: `(start, stop) -> (stop - start, num_gallery)` distances
      of queries start..stop-1, smaller is closer; called from up to 4
      threads at once.
    q_pids, g_pids, q_camids, g_camids: as for `evaluate`.
    **kwargs: keyword arguments of `evaluate`.
  """
  shape = (np.asarray(q_pids).shape[0], np.asarray(g_pids).shape[0])

  def block(s, e, cols):
    rows = distance_rows(s, e)
    return rows if len(cols) == shape[1] else rows[:, cols]

  return _evaluate_source(shape, block, q_pids, g_pids, q_camids, g_camids,
                          **kwargs)


def image_camids(q_images: Sequence[str], g_images: Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Camera ids under which the evaluation removes only the query itself.

  For data without camera ids: each distinct image gets its own id, so the
  same-identity-same-camera rule removes only the query's own image (one
  camera for all would remove every match).

  Args:
    q_images, g_images: a key (file path) per query and gallery image.

  Returns:
    (q_camids, g_camids) int64: equal only for equal keys.
  """
  ids: dict[str, int] = {}
  q = np.array([ids.setdefault(k, len(ids)) for k in q_images], np.int64)
  g = np.array([ids.setdefault(k, len(ids)) for k in g_images], np.int64)
  return q, g


_CUHK03_REPEATS = 10


def _eval_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """torchreid's eval_cuhk03, same np.random draws, vectorised per query."""
  num_q, num_g = distmat.shape
  chunk = rank_engine.default_chunk_size(num_g, 64 << 20)
  all_cmc, all_ap = [], []
  ranks_axis = np.arange(max_rank)
  for start in range(0, num_q, chunk):
    block = np.asarray(distmat[start:start + chunk])
    if np.isnan(block).any():
      raise RankInputError(
          f"distance matrix has NaN values (rows from {start})")
    indices = np.argsort(block, axis=1, kind="stable")
    for r, order in enumerate(indices):
      q_pid, q_cam = q_pids[start + r], q_camids[start + r]
      ord_pids = g_pids[order]
      kept_pids = ord_pids[~((ord_pids == q_pid) & (g_camids[order] == q_cam))]
      matches = np.nonzero(kept_pids == q_pid)[0]
      if matches.size == 0:
        continue  # No random draws for skipped queries, as in torchreid.
      grouped = np.argsort(kept_pids, kind="stable")
      uniq, first, counts = np.unique(kept_pids[grouped], return_index=True,
                                      return_counts=True)
      # torchreid draws per identity in order of first appearance in the
      # ranked list; randint with an array of bounds consumes the legacy
      # stream exactly like one np.random.choice call per identity.
      appearance = np.argsort(grouped[first])
      draws = np.random.randint(0, counts[appearance],
                                size=(_CUHK03_REPEATS, len(uniq)))
      chosen = grouped[first[appearance] + draws]
      q_col = int(np.nonzero(uniq[appearance] == q_pid)[0][0])
      rank = (chosen < chosen[:, q_col:q_col + 1]).sum(axis=1)
      hits = (rank[:, None] <= ranks_axis).sum(axis=0)
      all_cmc.append(hits.astype(np.float32) / _CUHK03_REPEATS)
      precision = np.arange(1, matches.size + 1) / (matches + 1.0)
      all_ap.append(rank_engine.numpy_pairwise_sum(
          matches.tolist(), precision.tolist(), len(kept_pids)) / matches.size)
  if not all_cmc:
    raise rank_engine.no_valid_query_error(num_q)
  cmc = np.asarray(all_cmc, dtype=np.float32).sum(0) / float(len(all_cmc))
  return cmc, np.mean(all_ap)


def evaluate_rank(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                  q_camids: np.ndarray, g_camids: np.ndarray,
                  max_rank: int = 50, use_metric_cuhk03: bool = False,
                  use_cython: bool = True) -> tuple[np.ndarray, float]:
  """Drop-in replacement for `torchreid.metrics.evaluate_rank`.

  Semantics are torchreid's, except: bad input raises `RankInputError` (a
  ValueError), not an AssertionError; the CMC always has min(max_rank,
  num_gallery) entries, the ranks torchreid's Python path could not fill
  being 1.0; tied distances go by gallery index (torchreid's is unstable).

  Args:
    distmat: (num_query, num_gallery) distances, smaller is closer.
    q_pids, g_pids, q_camids, g_camids: identities and cameras, 1-D.
    max_rank: CMC length (clipped to num_gallery).
    use_metric_cuhk03: torchreid's single-gallery-shot metric (one random
      gallery image per identity, resampled 10 times per query with
      np.random; AP over the full gallery).
    use_cython: accepted for compatibility; there is no compiled path.

  Returns:
    (cmc, mAP): cmc float32 (min(max_rank, num_gallery),), mAP a float,
    identical to torchreid's Python evaluator on inputs without tied
    distances.

  Raises:
    RankInputError: mismatched lengths, empty gallery, NaN distances, or no
      valid query.
  """
  del use_cython
  distmat = np.asarray(distmat)
  q_pids, g_pids, q_camids, g_camids = rank_engine.validate_inputs(
      distmat.shape, q_pids, g_pids, q_camids, g_camids)
  num_g = distmat.shape[1]
  if num_g < max_rank:
    logging.info("Note: number of gallery samples is quite small, got %d",
                 num_g)
    max_rank = num_g
  if use_metric_cuhk03:
    return _eval_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
  result = evaluate(distmat, q_pids, g_pids, q_camids, g_camids,
                    max_rank=max_rank)
  return result.cmc, np.float64(result.mAP)
