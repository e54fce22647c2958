"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without N x N matrices.

`re_ranking` has the signature and numbers of the dense numpy code torchreid
and fast-reid ship (`reference/rerank_numpy.py`); `re_ranking_features` takes
features; `rerank_features(...).rows(start, stop)` gives the result a block of
queries at a time. Only O(N * k1) numbers are held (N = queries + gallery):
the max(k1 + 1, k2) nearest of every image (`rerank_neighbours`), the
k-reciprocal sets as masks over those lists, the expanded sets as sparse
exp(-key) rows, their query expansion, and an inverted index of the gallery
rows for the Jaccard distance of the query rows.

Every float operation is the reference's, in its dtype and summation order,
so on the reference's inputs the result is the reference's bit for bit.
Equal keys are ordered by image index (queries first); the reference's
unstable argsort may order them otherwise, which matters only where equal
keys straddle the k1 + 1, round(k1 / 2) + 1 or k2 cut-off. From features,
the weights' distances come from a per-pair dot product (~1e-7 from the
GEMM's); `rerank_neighbours.distance_matrices` gives the matrices the
features path ranks.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from pshrnet_jax.errors import RankInputError
from pshrnet_jax.evaluation import rerank_neighbours

DEFAULT_K1, DEFAULT_K2, DEFAULT_LAMBDA = 20, 6, 0.3
# Rows per chunk of the sparse steps; their arrays are O(rows * k1^2 / 2).
_ROWS_PER_CHUNK = 2048
# Per Jaccard step: (query, gallery) pairs gathered (~48 bytes each), and
# float32 (queries x gallery) results (a few arrays of 16 MB).
_JACCARD_PAIRS = 2 << 20
_JACCARD_ELEMENTS = 4 << 20


@dataclasses.dataclass(frozen=True)
class SparseRows:
  """Sparse rows: row r has columns indices[indptr[r]:indptr[r+1]] (int32,
  ascending) holding values[...] (float32); indptr is int64."""
  indptr: np.ndarray
  indices: np.ndarray
  values: np.ndarray

  @classmethod
  def from_chunks(cls, counts, indices, values) -> SparseRows:
    counts = np.concatenate(counts)
    return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
               np.concatenate(indices).astype(np.int32),
               np.concatenate(values).astype(np.float32))

  def row_ids(self, start: int, stop: int) -> np.ndarray:
    """The row (relative to `start`) of each entry of rows start..stop-1."""
    return np.repeat(np.arange(stop - start),
                     np.diff(self.indptr[start:stop + 1]))


def _chunks(num: int):
  for start in range(0, num, _ROWS_PER_CHUNK):
    yield start, min(start + _ROWS_PER_CHUNK, num)


def _reciprocal_mask(lists: np.ndarray) -> np.ndarray:
  """mask[i, a]: image i is among the nearest (same width) of lists[i, a]."""
  mask = np.empty(lists.shape, bool)
  for start, stop in _chunks(len(lists)):
    back = lists[lists[start:stop]]  # (rows, width, width)
    mine = np.arange(start, stop)[:, None, None]
    mask[start:stop] = (back == mine).any(axis=2)
  return mask


def _expansion(start, stop, near, near_mask, half, half_mask):
  """(members per row, members row by row, sorted) of the expanded
  k-reciprocal sets of images start..stop-1."""
  reciprocal = np.where(near_mask[start:stop], near[start:stop], -1)
  candidates = near[start:stop]
  candidate_sets = np.where(half_mask[candidates], half[candidates], -1)
  shared = ((candidate_sets[..., None] == reciprocal[:, None, None, :])
            .any(axis=3) & (candidate_sets >= 0)).sum(axis=2)
  # The reference's test, in float64: |R(c) & R(i)| > 2/3 |R(c)|.
  accept = near_mask[start:stop] & (
      shared > 2.0 / 3 * half_mask[candidates].sum(axis=2))
  members = np.concatenate([reciprocal, np.where(
      accept[..., None], candidate_sets, -1).reshape(stop - start, -1)],
                           axis=1)
  members.sort(axis=1)
  first = members >= 0
  first[:, 1:] &= members[:, 1:] != members[:, :-1]
  return first.sum(axis=1), members[first]


def _weights(source, lists: np.ndarray, k1: int) -> SparseRows:
  """exp(-key) over each image's expanded set, normalised per row."""
  width = min(k1 + 1, lists.shape[1])
  half_width = min(int(np.around(k1 / 2.0)) + 1, width)
  near, half = lists[:, :width], lists[:, :half_width]
  near_mask, half_mask = _reciprocal_mask(near), _reciprocal_mask(half)
  counts, indices, values = [], [], []
  for start, stop in _chunks(len(lists)):
    count, members = _expansion(start, stop, near, near_mask, half,
                                half_mask)
    rows = np.repeat(np.arange(start, stop), count)
    weight = np.exp(-source.pair_keys(rows, members))
    counts.append(count)
    indices.append(members)
    values.append(weight / np.repeat(_row_sums(weight, count), count))
  return SparseRows.from_chunks(counts, indices, values)


def _row_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Each row's float32 sum, exactly as `np.sum` of that row alone.

  numpy's pairwise pattern depends on the row's length (`reduceat` sums in
  order), so rows of one length are summed together as a 2-D array.
  """
  starts = np.cumsum(counts) - counts
  total = np.zeros(len(counts), np.float32)
  for length in np.unique(counts[counts > 0]):
    rows = np.flatnonzero(counts == length)
    total[rows] = values[starts[rows, None] + np.arange(length)].sum(axis=1)
  return total


def _query_expansion(weights: SparseRows, lists: np.ndarray,
                     k2: int) -> SparseRows:
  """Row i: the float32 mean of the rows of i's k2 nearest images."""
  width = min(k2, lists.shape[1])
  num = len(lists)
  lengths = np.diff(weights.indptr)
  counts, indices, values = [], [], []
  for start, stop in _chunks(num):
    near = lists[start:stop, :width].ravel()  # row-major: neighbour order
    seg = lengths[near]
    offsets = np.repeat(weights.indptr[near] - (np.cumsum(seg) - seg), seg)
    gathered = offsets + np.arange(seg.sum())
    local = np.repeat(np.repeat(np.arange(stop - start), width), seg)
    key = local.astype(np.int64) * num + weights.indices[gathered]
    unique, group = np.unique(key, return_inverse=True)
    total = np.zeros(len(unique), np.float32)
    # In neighbour order, as the reference adds the rows one by one.
    np.add.at(total, group, weights.values[gathered])
    counts.append(np.bincount(unique // num, minlength=stop - start))
    indices.append(unique % num)
    values.append(total / np.float32(width))
  return SparseRows.from_chunks(counts, indices, values)


class ReRankedDistances:
  """Re-ranked query x gallery distances, computed a block of queries at a time.

  Holds the query rows' sparse encodings and an inverted index of the gallery
  rows; `rows` computes any block of the result, `to_dense` all of it.
  """

  def __init__(self, source, k1: int = DEFAULT_K1, k2: int = DEFAULT_K2,
               lambda_value: float = DEFAULT_LAMBDA):
    _check_parameters(k1, k2, lambda_value)
    self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
    self.num_query, self.num_gallery = source.num_query, source.num_gallery
    self._source = source
    num = source.num_images
    lists, _ = source.neighbours(min(max(k1 + 1, k2), num))
    encoded = _weights(source, lists, k1)
    if k2 != 1:
      encoded = _query_expansion(encoded, lists, k2)
    del lists
    q = self.num_query
    qptr = encoded.indptr[:q + 1]
    self.query_rows = SparseRows(qptr, encoded.indices[:qptr[-1]],
                                 encoded.values[:qptr[-1]])
    # The inverted index: for each image k, the gallery rows g holding it.
    gallery_cols = encoded.indices[qptr[-1]:]
    gallery_rows = np.repeat(np.arange(self.num_gallery, dtype=np.int32),
                             np.diff(encoded.indptr[q:]))
    order = np.argsort(gallery_cols, kind="stable")
    self.holder_counts = np.bincount(gallery_cols, minlength=num)
    self.holder_ptr = np.concatenate(
        [[0], np.cumsum(self.holder_counts)]).astype(np.int64)
    self.holder_rows = gallery_rows[order]
    self.holder_values = encoded.values[qptr[-1]:][order]
    del encoded, gallery_cols, gallery_rows, order
    # Pairs each query row gathers in the Jaccard step.
    self._work = np.zeros(q, np.int64)
    np.add.at(self._work, self.query_rows.row_ids(0, q),
              self.holder_counts[self.query_rows.indices])

  def _shared(self, start: int, stop: int) -> np.ndarray:
    """sum_k min(V[q, k], V[g, k]) for queries start..stop-1, float32."""
    num_g = self.num_gallery
    rows = self.query_rows
    lo, hi = rows.indptr[start], rows.indptr[stop]
    columns = rows.indices[lo:hi]
    count = self.holder_counts[columns]
    offsets = np.repeat(self.holder_ptr[columns] - (np.cumsum(count) - count),
                        count)
    gathered = offsets + np.arange(count.sum())
    overlap = np.minimum(np.repeat(rows.values[lo:hi], count),
                         self.holder_values[gathered])
    target = (np.repeat(rows.row_ids(start, stop), count).astype(np.int64)
              * num_g + self.holder_rows[gathered])
    shared = np.zeros((stop - start) * num_g, np.float32)
    # Entries come query by query, columns ascending: each (q, g) sum is
    # added in the reference's order.
    np.add.at(shared, target, overlap)
    return shared.reshape(stop - start, num_g)

  def rows(self, start: int, stop: int) -> np.ndarray:
    """(stop - start, num_gallery) float32 distances of queries start..stop-1."""
    if not 0 <= start <= stop <= self.num_query:
      raise RankInputError(f"query rows {start}:{stop} outside 0:"
                           f"{self.num_query}")
    out = np.empty((stop - start, self.num_gallery), np.float32)
    a = start
    while a < stop:
      # As many queries as fit both budgets, at least one.
      cumulative = np.cumsum(self._work[a:stop])
      fit = min(int(np.searchsorted(cumulative, _JACCARD_PAIRS,
                                    side="right")),
                _JACCARD_ELEMENTS // self.num_gallery)
      b = a + max(1, fit)
      shared = self._shared(a, b)
      jaccard = 1 - shared / (2.0 - shared)
      keys = self._source.query_gallery_keys(a, b)
      out[a - start:b - start] = (
          jaccard * np.float32(1 - self.lambda_value) +
          keys * np.float32(self.lambda_value))
      a = b
    return out

  def to_dense(self) -> np.ndarray:
    """All (num_query, num_gallery) re-ranked distances, float32."""
    return self.rows(0, self.num_query)


def _check_parameters(k1, k2, lambda_value) -> None:
  for name, value in (("k1", k1), ("k2", k2)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
        or value < 1:
      raise RankInputError(f"re-ranking {name} must be an integer >= 1, got "
                           f"{value!r}")
  if not 0.0 <= lambda_value <= 1.0:
    raise RankInputError(f"re-ranking lambda_value must lie in [0, 1], got "
                         f"{lambda_value!r}")


def rerank_features(query: np.ndarray, gallery: np.ndarray,
                    k1: int = DEFAULT_K1, k2: int = DEFAULT_K2,
                    lambda_value: float = DEFAULT_LAMBDA, *,
                    metric: str = "cosine",
                    rows_per_block: Optional[int] = None
                    ) -> ReRankedDistances:
  """`re_ranking_features`'s result as a ReRankedDistances (rows on demand).

  Args:
    query: (num_query, dim) features.
    gallery: (num_gallery, dim) features.
    k1, k2, lambda_value: as for `re_ranking`.
    metric: "cosine" (1 - dot, for L2-normalised features) or "euclidean"
      (squared).
    rows_per_block: rows of the jitted neighbour pass (default: a
      (rows, N) float32 block of about 16 MB).
  """
  return ReRankedDistances(
      rerank_neighbours.FeatureSource(query, gallery, metric, rows_per_block),
      k1, k2, lambda_value)


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray,
               g_g_dist: np.ndarray, k1: int = DEFAULT_K1,
               k2: int = DEFAULT_K2,
               lambda_value: float = DEFAULT_LAMBDA) -> np.ndarray:
  """k-reciprocal re-ranking with torchreid's / fast-reid's signature.

  Args:
    q_g_dist: (num_query, num_gallery) distances.
    q_q_dist: (num_query, num_query) distances.
    g_g_dist: (num_gallery, num_gallery) distances.
    k1: size of the k-reciprocal neighbourhood (paper: 20).
    k2: size of the query expansion; 1 turns it off (paper: 6).
    lambda_value: weight of the original distance (paper: 0.3).

  Returns:
    (num_query, num_gallery) float32 re-ranked distances, smaller is closer.

  Raises:
    RankInputError: mismatched shapes, NaN, bad k1 / k2 / lambda_value, or
      an image at distance 0 from every image.
  """
  return ReRankedDistances(
      rerank_neighbours.DistanceSource(q_g_dist, q_q_dist, g_g_dist), k1, k2,
      lambda_value).to_dense()


def re_ranking_features(query: np.ndarray, gallery: np.ndarray,
                        k1: int = DEFAULT_K1, k2: int = DEFAULT_K2,
                        lambda_value: float = DEFAULT_LAMBDA, *,
                        metric: str = "cosine",
                        rows_per_block: Optional[int] = None) -> np.ndarray:
  """`re_ranking` of the metric's distances between features (arguments as
  `rerank_features`): (num_query, num_gallery) float32."""
  return rerank_features(query, gallery, k1, k2, lambda_value, metric=metric,
                         rows_per_block=rows_per_block).to_dense()
