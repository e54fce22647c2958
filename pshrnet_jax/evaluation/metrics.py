"""Re-ID evaluation: protocols, AP conventions, mINP, per-factor results.

Two AP/averaging conventions, side by side (both remove gallery entries with
the query's identity AND camera, and rank by ascending distance):

| | `torchreid` (default) | `released` (PS-HRNet's released code) |
|---|---|---|
| AP | non-interpolated: mean over positives of precision at each positive | trapezoid: mean over positives of (precision before + precision at)/2, precision before the first rank counts as 1 |
| queries with no kept positive | skipped | count as 0 |
| CMC and mAP averaged over | valid queries | all queries |
| gallery pid -1 (junk) | kept | removed |

mINP (fast-reid) is averaged over valid queries in both conventions.

Data without camera ids (the `folder` dataset's identity-only layout) would
lose every match to the same-camera rule; `image_camids` gives each image
its own camera id instead, so only the query image itself is removed.

Protocols: `multi_shot` (Market-1501 / DukeMTMC-reID) ranks the whole
gallery. `single_shot` (MLR-CUHK03, MLR-VIPeR, CAVIAR) keeps one random
gallery image per identity, the same for all queries of a trial, repeated over
seeded trials; the result is the mean over trials with the per-trial values
and their standard deviation. torchreid's own `evaluate_rank` (including
its per-query resampled single-gallery-shot metric) is reproduced exactly by
`torchreid_compat.evaluate_rank`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from pshrnet_jax.evaluation import rank_engine
from pshrnet_jax.evaluation.rank_engine import QueryStats
from pshrnet_jax.evaluation.rank_engine import RankInputError
from pshrnet_jax.evaluation.rank_engine import query_stats

__all__ = ["PROTOCOLS", "AP_CONVENTIONS", "RankInputError", "RankResult",
           "TrialStats", "evaluate", "evaluate_features", "evaluate_rows",
           "image_camids"]

PROTOCOLS = ("multi_shot", "single_shot")
AP_CONVENTIONS = ("torchreid", "released")


@dataclasses.dataclass(frozen=True)
class TrialStats:
  """Per-trial values of a single-shot evaluation.

  Attributes:
    cmc: (trials, max_rank) float32.
    mAP: (trials,).
    mINP: (trials,).
    num_valid_queries: (trials,) int.
  """
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


def _aggregate(stats: QueryStats, select: np.ndarray, max_rank: int,
               ap_convention: str):
  """(cmc, mAP, mINP, num_valid, num_queries) of the selected queries."""
  valid = stats.valid & select
  num_valid, num_total = int(valid.sum()), int(select.sum())
  if num_valid == 0:
    nan = float("nan")
    return np.full(max_rank, nan, np.float32), nan, nan, 0, num_total
  counts = rank_engine.cmc_counts(stats.first_rank[valid], max_rank)
  if ap_convention == "torchreid":
    cmc = counts.astype(np.float32) / float(num_valid)
    m_ap = float(np.mean(stats.ap_torchreid[valid]))
  else:
    cmc = counts.astype(np.float32) / float(num_total)
    m_ap = float(np.sum(stats.ap_released[select]) / num_total)
  return cmc, m_ap, float(np.mean(stats.inp[valid])), num_valid, num_total


def _evaluate_source(distance_block, num_q, num_g, q_pids, g_pids, q_camids,
                     g_camids, *, max_rank, protocol, ap_convention, trials,
                     seed, q_lr_factors, chunk_size):
  """The richer evaluator over `distance_block(q0, q1, cols) -> block`."""
  if protocol not in PROTOCOLS:
    raise RankInputError(f"unknown protocol {protocol!r}; use one of "
                         f"{PROTOCOLS}")
  if ap_convention not in AP_CONVENTIONS:
    raise RankInputError(f"unknown ap_convention {ap_convention!r}; use one "
                         f"of {AP_CONVENTIONS}")
  if q_lr_factors is not None:
    q_lr_factors = np.asarray(q_lr_factors)
    if q_lr_factors.shape != (num_q,):
      raise RankInputError(f"q_lr_factors has shape {q_lr_factors.shape}, "
                           f"expected ({num_q},)")
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
  subsets = {None: np.ones(num_q, dtype=bool)}
  if q_lr_factors is not None:
    for factor in np.unique(q_lr_factors):
      subsets[int(factor)] = q_lr_factors == factor
  per_trial = {key: [] for key in subsets}
  for cols in galleries:
    stats = query_stats(
        lambda s, e, cols=cols: distance_block(s, e, cols), q_pids,
        g_pids[cols], q_camids, g_camids[cols], chunk_size=chunk_size)
    if not stats.valid.any():
      raise rank_engine.no_valid_query_error(num_q)
    for key, select in subsets.items():
      per_trial[key].append(_aggregate(stats, select, max_rank, ap_convention))

  def result(rows, per_factor):
    cmc, m_ap, m_inp, n_valid, n_total = (np.asarray(v) for v in zip(*rows))
    trial_stats = None
    if protocol == "single_shot":
      trial_stats = TrialStats(cmc=cmc.astype(np.float32), mAP=m_ap,
                               mINP=m_inp, num_valid_queries=n_valid)
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
    seed: seed of the single-shot gallery sampling (numpy default_rng).
    q_lr_factors: (num_query,) LR down-sampling factor of each query; adds a
      per-factor breakdown (a factor whose queries are all invalid has NaN
      metrics).
    chunk_size: queries per chunk (default: about 256 MB per chunk).

  Returns:
    RankResult.

  Raises:
    RankInputError: bad shapes, NaN, empty gallery, no valid query, unknown
      protocol or convention.
  """
  distmat = np.asarray(distmat)
  q_pids, g_pids, q_camids, g_camids = rank_engine.validate_inputs(
      distmat.shape, q_pids, g_pids, q_camids, g_camids)
  num_q, num_g = distmat.shape

  def block(s, e, cols):
    return distmat[s:e] if len(cols) == num_g else distmat[s:e][:, cols]

  return _evaluate_source(
      block, num_q, num_g, q_pids, g_pids, q_camids, g_camids,
      max_rank=max_rank, protocol=protocol, ap_convention=ap_convention,
      trials=trials, seed=seed, q_lr_factors=q_lr_factors,
      chunk_size=chunk_size)


def evaluate_features(q_features: np.ndarray, g_features: np.ndarray,
                      q_pids: np.ndarray, g_pids: np.ndarray,
                      q_camids: np.ndarray, g_camids: np.ndarray, *,
                      metric: str = "cosine", **kwargs) -> RankResult:
  """`evaluate` from features; distances are computed per query chunk.

  The full distance matrix never exists, so a 10,000 x 100,000 problem needs
  only a few chunks of (chunk_size, num_gallery) float32 at a time.

  Args:
    q_features: (num_query, dim) query features.
    g_features: (num_gallery, dim) gallery features.
    q_pids: (num_query,) query identities.
    g_pids: (num_gallery,) gallery identities.
    q_camids: (num_query,) query cameras.
    g_camids: (num_gallery,) gallery cameras.
    metric: "cosine" (1 - dot; features are expected L2-normalised, as
      `features.extract_features` returns them) or "euclidean" (squared,
      torchreid's default).
    **kwargs: keyword arguments of `evaluate`.

  Returns:
    RankResult.
  """
  qf = np.asarray(q_features, dtype=np.float32)
  gf = np.asarray(g_features, dtype=np.float32)
  if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
    raise RankInputError(f"features must be (n, dim) with the same dim, got "
                         f"query {qf.shape} and gallery {gf.shape}")
  if metric not in ("cosine", "euclidean"):
    raise RankInputError(f"unknown metric {metric!r}; use 'cosine' or "
                         f"'euclidean'")
  q_pids, g_pids, q_camids, g_camids = rank_engine.validate_inputs(
      (qf.shape[0], gf.shape[0]), q_pids, g_pids, q_camids, g_camids)
  g_sq = np.einsum("ij,ij->i", gf, gf)

  def block(s, e, cols):
    g, gsq = (gf, g_sq) if len(cols) == len(gf) else (gf[cols], g_sq[cols])
    dot = qf[s:e] @ g.T
    if metric == "cosine":
      return 1.0 - dot
    q_sq = np.einsum("ij,ij->i", qf[s:e], qf[s:e])
    return q_sq[:, None] + gsq[None, :] - 2.0 * dot

  return _evaluate_source(block, qf.shape[0], gf.shape[0], q_pids, g_pids,
                          q_camids, g_camids, **{**_DEFAULTS, **kwargs})


# `evaluate`'s keyword defaults, for the entry points that pass **kwargs on.
_DEFAULTS = {"max_rank": 50, "protocol": "multi_shot",
             "ap_convention": "torchreid", "trials": 10, "seed": 0,
             "q_lr_factors": None, "chunk_size": None}


def evaluate_rows(distance_rows: Callable[[int, int], np.ndarray],
                  q_pids: np.ndarray, g_pids: np.ndarray,
                  q_camids: np.ndarray, g_camids: np.ndarray,
                  **kwargs) -> RankResult:
  """`evaluate` over distances computed a block of query rows at a time.

  For distances that are computed rather than stored, such as re-ranked
  ones (`rerank.rerank_features(...).rows`): only the blocks being ranked
  exist at once. Single shot asks for each block once per trial.

  Args:
    distance_rows: `(start, stop) -> (stop - start, num_gallery)` distances
      of queries start..stop-1 to the whole gallery, smaller is closer;
      called from up to 4 threads at once.
    q_pids: (num_query,) query identities.
    g_pids: (num_gallery,) gallery identities.
    q_camids: (num_query,) query cameras.
    g_camids: (num_gallery,) gallery cameras.
    **kwargs: keyword arguments of `evaluate`.

  Returns:
    RankResult.
  """
  shape = (np.asarray(q_pids).shape[0], np.asarray(g_pids).shape[0])
  q_pids, g_pids, q_camids, g_camids = rank_engine.validate_inputs(
      shape, q_pids, g_pids, q_camids, g_camids)

  def block(s, e, cols):
    rows = distance_rows(s, e)
    return rows if len(cols) == shape[1] else rows[:, cols]

  return _evaluate_source(block, *shape, q_pids, g_pids, q_camids, g_camids,
                          **{**_DEFAULTS, **kwargs})


def image_camids(q_images: Sequence[str], g_images: Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Camera ids under which the evaluation removes only the query itself.

  For data without camera ids: every distinct image (file) gets its own id,
  so the same-identity-same-camera rule removes from a query's gallery only
  that very image, when the gallery holds it, and every other image of the
  identity counts as a match. (Giving all images one camera instead would
  remove every match.)

  Args:
    q_images: a key per query image (its file path).
    g_images: a key per gallery image.

  Returns:
    (q_camids, g_camids) int64: equal only for equal keys.
  """
  ids: dict[str, int] = {}
  q = np.array([ids.setdefault(k, len(ids)) for k in q_images], np.int64)
  g = np.array([ids.setdefault(k, len(ids)) for k in g_images], np.int64)
  return q, g
