"""Per-query ranking statistics for re-ID, exact and fast.

A query's CMC, AP and INP depend only on the ranks of its positives among the
kept gallery entries, so instead of argsorting every row (as torchreid does)
only the entries no farther than the farthest positive are sorted, and the
positives' ranks read with `searchsorted`; ties go by gallery index, a row
with a tie at a positive taking an exact slow path. torchreid's AP is summed
as `numpy.sum` sums its mostly-zero per-rank array (pairwise, emulated on
the non-zero entries), so mAP equals torchreid's bit for bit. Queries go in
chunks whose distances come from a matrix or from features, so memory stays
bounded.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import os
from typing import Callable

import numpy as np

from pshrnet_jax.errors import RankInputError

# numpy's pairwise summation: fewer than 8 numbers are added in order, up to
# 128 in 8 interleaved lanes, more are split in two halves (multiple of 8).
_PAIRWISE_BLOCK = 128
_PAIRWISE_UNROLL = 8
METRICS = ("cosine", "euclidean")


@dataclasses.dataclass(frozen=True)
class QueryStats:
  """Per-query results in query order.

  Attributes:
    valid: whether the query has a kept positive (else first_rank -1, APs 0).
    first_rank: 0-based rank of the first positive among kept entries.
    ap_torchreid: non-interpolated AP.
    ap_released: trapezoid-interpolated AP of the released PS-HRNet code.
    inp: inverse negative penalty, num_positives / (rank of hardest + 1).
  """
  valid: np.ndarray
  first_rank: np.ndarray
  ap_torchreid: np.ndarray
  ap_released: np.ndarray
  inp: np.ndarray


def numpy_pairwise_sum(pos: list[int], val: list[float], n: int, a: int = 0,
                       b: int | None = None, lo: int = 0) -> float:
  """`numpy.sum` (pairwise) of a float64 array of length `n`, zero but at `pos`.

  Args:
    pos: ascending indices of the non-zero entries.
    val: the entries at those indices.
    n: the array's length.
    a, b, lo: the recursion's state: visits pos[a:b] over [lo, lo + n).
  """
  b = len(pos) if b is None else b
  if a == b:
    return 0.0  # An all-zero block adds exactly nothing.
  if n < _PAIRWISE_UNROLL:
    res = -0.0
    for i in range(a, b):
      res += val[i]
    return res
  if n <= _PAIRWISE_BLOCK:
    unrolled = n - n % _PAIRWISE_UNROLL
    lanes = [0.0] * _PAIRWISE_UNROLL
    tail = []
    for i in range(a, b):
      p = pos[i] - lo
      if p < unrolled:
        lanes[p % _PAIRWISE_UNROLL] += val[i]
      else:
        tail.append(val[i])
    res = (((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
           ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))
    for t in tail:
      res += t
    return res
  half = n // 2
  half -= half % _PAIRWISE_UNROLL
  split = bisect.bisect_left(pos, lo + half, a, b)
  return (numpy_pairwise_sum(pos, val, half, a, split, lo) +
          numpy_pairwise_sum(pos, val, n - half, split, b, lo + half))


class GalleryIndex:
  """Gallery entries grouped by identity, for finding a query's positives."""

  def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray):
    self.g_camids = g_camids
    self.order = np.argsort(g_pids, kind="stable")
    self.uniq, self.starts, self.counts = np.unique(
        g_pids[self.order], return_index=True, return_counts=True)

  def same_identity_pairs(self, q_pids: np.ndarray, q_camids: np.ndarray):
    """Every same-identity (query in the chunk, gallery) pair, and whether
    it is removed (same camera too)."""
    slot = np.minimum(np.searchsorted(self.uniq, q_pids), len(self.uniq) - 1)
    found = self.uniq[slot] == q_pids
    n_same = np.where(found, self.counts[slot], 0)
    pair_q = np.repeat(np.arange(len(q_pids)), n_same)
    offset = np.where(found, self.starts[slot], 0) - (np.cumsum(n_same) - n_same)
    pair_g = self.order[np.arange(n_same.sum()) + np.repeat(offset, n_same)]
    removed = self.g_camids[pair_g] == q_camids[pair_q]
    return pair_q, pair_g, removed


def _exact_ranks(row, pos_g, removed_g):
  """Ranks of positives among kept entries, ties broken by gallery index."""
  kept = np.ones(row.shape[0], dtype=bool)
  kept[removed_g] = False
  ranks = [np.count_nonzero(kept & (row < row[g])) +
           np.count_nonzero(kept[:g] & (row[:g] == row[g])) for g in pos_g]
  return np.sort(np.asarray(ranks, dtype=np.int64))


def _chunk_positive_ranks(dist, q_pids, q_camids, gallery):
  """(query in the chunk, 0-based rank) of every kept positive, sorted by
  query then rank, and the number of kept gallery entries per query."""
  if np.isnan(dist).any():
    rows = np.unique(np.nonzero(np.isnan(dist))[0])
    raise RankInputError(
        f"distance matrix has NaN values (in {rows.size} query rows of this "
        f"chunk, first at chunk row {rows[0]})")
  pair_q, pair_g, removed = gallery.same_identity_pairs(q_pids, q_camids)
  num_q, num_g = dist.shape
  n_kept = num_g - np.bincount(pair_q[removed], minlength=num_q)
  pos_q, pos_g = pair_q[~removed], pair_g[~removed]
  pos_v = dist[pos_q, pos_g]
  by_value = np.lexsort((pos_g, pos_v, pos_q))
  pos_q, pos_g, pos_v = pos_q[by_value], pos_g[by_value], pos_v[by_value]
  rem_q, rem_g = pair_q[removed], pair_g[removed]
  rem_v = dist[rem_q, rem_g]
  by_value = np.lexsort((rem_v, rem_q))
  rem_q, rem_g, rem_v = rem_q[by_value], rem_g[by_value], rem_v[by_value]
  pos_bounds = np.searchsorted(pos_q, np.arange(num_q + 1))
  rem_bounds = np.searchsorted(rem_q, np.arange(num_q + 1))
  ranks = np.empty(pos_q.shape[0], dtype=np.int64)
  for r in np.nonzero(np.diff(pos_bounds))[0]:
    p0, p1 = pos_bounds[r], pos_bounds[r + 1]
    r0, r1 = rem_bounds[r], rem_bounds[r + 1]
    row = dist[r]
    v = pos_v[p0:p1]
    below = row[row <= v[-1]]
    below.sort()
    left = np.searchsorted(below, v, "left")
    if (np.searchsorted(below, v, "right") - left).max() > 1:
      ranks[p0:p1] = _exact_ranks(row, pos_g[p0:p1], rem_g[r0:r1])
    else:
      ranks[p0:p1] = left - np.searchsorted(rem_v[r0:r1], v, "left")
  return pos_q, ranks, n_kept


def _chunk_stats(dist, q_pids, q_camids, gallery):
  """QueryStats fields for one chunk of queries."""
  num_q = dist.shape[0]
  pos_q, ranks, n_kept = _chunk_positive_ranks(dist, q_pids, q_camids, gallery)
  bounds = np.searchsorted(pos_q, np.arange(num_q + 1))
  n_pos = np.diff(bounds)
  valid = n_pos > 0
  # j: 0-based index of each positive within its query's ranked positives.
  j = np.arange(ranks.shape[0]) - np.repeat(bounds[:-1], n_pos)
  precision = (j + 1) / (ranks + 1.0)
  with np.errstate(divide="ignore", invalid="ignore"):
    old_precision = np.where(ranks != 0, j / ranks, 1.0)
  d_recall = np.repeat(1.0 / np.maximum(n_pos, 1), n_pos)
  released_terms = d_recall * (old_precision + precision) / 2
  ap_torchreid, ap_released, inp = np.zeros((3, num_q))
  first_rank = np.full(num_q, -1, dtype=np.int64)
  for r in np.nonzero(valid)[0]:
    a, b = bounds[r], bounds[r + 1]
    ap_torchreid[r] = numpy_pairwise_sum(
        ranks[a:b].tolist(), precision[a:b].tolist(), int(n_kept[r])) / (b - a)
    ap_released[r] = np.cumsum(released_terms[a:b])[-1]
    first_rank[r] = ranks[a]
    inp[r] = (b - a) / (ranks[b - 1] + 1.0)
  return valid, first_rank, ap_torchreid, ap_released, inp


def default_chunk_size(num_gallery: int, budget_bytes: int = 256 << 20) -> int:
  """Query rows per chunk so one float32 chunk stays near `budget_bytes`."""
  return int(max(1, min(4096, budget_bytes // max(1, 4 * num_gallery))))


def query_stats(distance_chunk: Callable[[int, int], np.ndarray],
                q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                g_camids: np.ndarray, *,
                chunk_size: int | None = None) -> QueryStats:
  """Ranking statistics of every query, computed chunk by chunk.

  Args:
    distance_chunk: `(start, stop) -> (stop - start, num_gallery)` distances
      of queries start..stop-1 to the whole gallery.
    q_pids, g_pids, q_camids, g_camids: identities and cameras, 1-D.
    chunk_size: queries per chunk (default: about 256 MB of float32 per chunk).
  """
  num_q, num_g = len(q_pids), len(g_pids)
  chunk_size = chunk_size or default_chunk_size(num_g)
  gallery = GalleryIndex(np.asarray(g_pids), np.asarray(g_camids))

  def run(start):
    stop = min(start + chunk_size, num_q)
    dist = np.asarray(distance_chunk(start, stop))
    if dist.shape != (stop - start, num_g):
      raise RankInputError(
          f"distance chunk for queries {start}:{stop} has shape {dist.shape}, "
          f"expected {(stop - start, num_g)}")
    return _chunk_stats(dist, q_pids[start:stop], q_camids[start:stop], gallery)

  # numpy releases the GIL while comparing and sorting; at most 4 chunks are
  # alive at once, so memory stays bounded.
  with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)
                                             ) as pool:
    parts = list(pool.map(run, range(0, num_q, chunk_size)))
  return QueryStats(*[np.concatenate(f) for f in zip(*parts)])


def validate_inputs(shape, q_pids, g_pids, q_camids, g_camids):
  """Checks shapes and lengths; returns the id/camera arrays as numpy."""
  arrays = [np.asarray(a) for a in (q_pids, g_pids, q_camids, g_camids)]
  q_pids, g_pids, q_camids, g_camids = arrays
  for name, arr in zip(("q_pids", "g_pids", "q_camids", "g_camids"), arrays):
    if arr.ndim != 1:
      raise RankInputError(f"{name} must be 1-D, got shape {arr.shape}")
  if len(shape) != 2:
    raise RankInputError(f"distmat must be 2-D, got shape {tuple(shape)}")
  num_q, num_g = shape
  if len(q_pids) != num_q or len(q_camids) != num_q:
    raise RankInputError(
        f"mismatched query lengths: distmat has {num_q} rows, q_pids "
        f"{len(q_pids)}, q_camids {len(q_camids)}")
  if len(g_pids) != num_g or len(g_camids) != num_g:
    raise RankInputError(
        f"mismatched gallery lengths: distmat has {num_g} columns, g_pids "
        f"{len(g_pids)}, g_camids {len(g_camids)}")
  if num_g == 0:
    raise RankInputError("empty gallery: distmat has 0 columns")
  if num_q == 0:
    raise RankInputError("no queries: distmat has 0 rows")
  return arrays


def check_features(query, gallery, metric: str):
  """(query, gallery) as float32 (n, dim) arrays of one dim, and a known
  metric ("cosine" or "euclidean"), else RankInputError."""
  if metric not in METRICS:
    raise RankInputError(f"unknown metric {metric!r}; use one of {METRICS}")
  query, gallery = (np.asarray(a, np.float32) for a in (query, gallery))
  if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
    raise RankInputError(f"features must be (n, dim) with the same dim, got "
                         f"query {query.shape} and gallery {gallery.shape}")
  return query, gallery


def no_valid_query_error(num_q):
  return RankInputError(
      f"no query identity appears in the gallery under another camera: all "
      f"{num_q} queries would be skipped (torchreid: 'all query identities do "
      f"not appear in gallery')")
