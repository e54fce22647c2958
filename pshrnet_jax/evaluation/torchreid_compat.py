"""torchreid's `evaluate_rank`, as a drop-in with the same numbers.

    from pshrnet_jax.evaluation import evaluate_rank
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)

Semantics are torchreid's (`torchreid.metrics.rank.evaluate_rank`): gallery
entries with the query's identity and camera are removed, queries without a
remaining match are skipped, CMC is clipped, AP non-interpolated, both are
averaged over valid queries; `use_metric_cuhk03=True` reproduces its
single-gallery-shot metric draw for draw (the same `np.random` calls).

Documented differences from torchreid's `evaluate_rank`:
- no valid query raises `RankInputError` (a ValueError) instead of an
  AssertionError; NaN distances, mismatched lengths and an empty gallery too.
- the CMC always has min(max_rank, num_gallery) entries; where torchreid's
  Python path would return a shorter array or fail (fewer kept gallery entries
  or identities than max_rank), the missing ranks are 1.0.
- tied distances are ranked by gallery index (stable); torchreid's argsort
  is unstable, so with ties its order is unspecified.
"""

from __future__ import annotations

import logging

import numpy as np

from pshrnet_jax.evaluation import rank_engine

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
      raise rank_engine.RankInputError(
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

  Args:
    distmat: (num_query, num_gallery) distances, smaller is closer.
    q_pids: (num_query,) query identities.
    g_pids: (num_gallery,) gallery identities.
    q_camids: (num_query,) query cameras.
    g_camids: (num_gallery,) gallery cameras.
    max_rank: CMC length (clipped to num_gallery).
    use_metric_cuhk03: torchreid's single-gallery-shot metric (one random
      gallery image per identity, resampled 10 times per query with
      np.random; AP over the full gallery).
    use_cython: accepted for compatibility; there is no compiled path.

  Returns:
    (cmc, mAP): cmc float32 (min(max_rank, num_gallery),), mAP a float,
    identical to torchreid's Python evaluator on inputs without tied
    distances (module docstring lists the differences).

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
  stats = rank_engine.query_stats(lambda s, e: distmat[s:e], q_pids, g_pids,
                                  q_camids, g_camids)
  num_valid = int(stats.valid.sum())
  if num_valid == 0:
    raise rank_engine.no_valid_query_error(distmat.shape[0])
  counts = rank_engine.cmc_counts(stats.first_rank[stats.valid], max_rank)
  cmc = counts.astype(np.float32) / float(num_valid)
  return cmc, np.mean(stats.ap_torchreid[stats.valid])
