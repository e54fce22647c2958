"""The distances k-reciprocal re-ranking reads, a block of rows at a time.

With D = [[q_q, q_g], [q_g^T, g_g]] the N x N distances, the reference
(`reference/rerank_numpy.py`) reads for image i the "key"

    key(i, j) = float32(D[j, i] ** 2) / m[i],   m[i] = max_j float32(D[j, i] ** 2)

A source gives, never holding D: `neighbours(width)` (the `width` smallest
keys of every image, equal keys by index, and m), `pair_keys(i, j)` and
`query_gallery_keys(start, stop)`. A jitted top-k per block of rows finds the
`width + 8` smallest squared distances; their keys are divided in numpy (XLA
multiplies by the reciprocal, which rounds differently) and sorted by (key,
index); a row whose last candidate's key does not exceed its `width`-th had
keys made equal across the cut and is searched again with twice the
candidates. `DistanceSource` reads given matrices (the reference's keys bit
for bit); `FeatureSource` computes D from features in a jitted GEMM per block
of rows (D symmetric up to rounding, so rows stand in for columns).
"""

from __future__ import annotations

import abc
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pshrnet_jax.errors import RankInputError
from pshrnet_jax.evaluation import rank_engine

# float32 values per block (16 MB): buffers under glibc's 32 MB mmap
# threshold are reused from the heap, larger ones page-faulted in afresh.
_BLOCK_ELEMENTS = 4 << 20
# Candidates beyond the wanted width, for keys made equal by the division.
_MARGIN = 8


def block_rows(num_columns: int, limit: int = 2048) -> int:
  """Rows per block so that a (rows, num_columns) float32 block is ~16 MB."""
  return int(max(8, min(limit, _BLOCK_ELEMENTS // max(1, num_columns))))


@functools.partial(jax.jit, static_argnames=("width", "check"))
def _smallest(squared: jax.Array, width: int, check: bool = False):
  """(row maxima, NaN where `check` finds NaN or Inf; the `width` smallest
  values of each row; their columns)."""
  # lax.top_k keeps the lower index first among equal values.
  values, columns = jax.lax.top_k(-squared, width)
  maxima = jnp.max(squared, axis=1)
  if check:
    finite = jnp.all(jnp.isfinite(squared), axis=1)
    maxima = jnp.where(finite, maxima, jnp.nan)
  return maxima, -values, columns


def _feature_distances(rows, rows_sq, columns, columns_sq, metric):
  dot = jnp.matmul(rows, columns.T, precision=jax.lax.Precision.HIGHEST)
  if metric == "cosine":
    return 1.0 - dot
  return rows_sq[:, None] + columns_sq[None, :] - 2.0 * dot


@functools.partial(jax.jit, static_argnames=("width", "metric"))
def _feature_smallest(rows, rows_sq, everything, everything_sq, width,
                      metric):
  d = _feature_distances(rows, rows_sq, everything, everything_sq, metric)
  return _smallest(d * d, width)


@functools.partial(jax.jit, static_argnames=("metric",))
def _feature_squared(rows, rows_sq, columns, columns_sq, metric):
  d = _feature_distances(rows, rows_sq, columns, columns_sq, metric)
  return d * d


_jitted_distances = jax.jit(_feature_distances, static_argnames=("metric",))


def _padded(block: np.ndarray, rows: int) -> np.ndarray:
  """`block` with zero rows appended up to `rows`: one compiled shape."""
  if block.shape[0] == rows:
    return block
  pad = np.zeros((rows - block.shape[0],) + block.shape[1:], block.dtype)
  return np.concatenate([block, pad])


def _by_key(maxima, squared, columns, width, num_images):
  """The first `width` candidates by (key, index), and which rows are settled
  (no image outside the candidates can be among them)."""
  keys = squared / maxima[:, None]
  order = np.lexsort((columns, keys))
  keys = np.take_along_axis(keys, order, axis=1)
  columns = np.take_along_axis(columns, order, axis=1)
  settled = ((keys[:, -1] > keys[:, width - 1]) |
             (columns.shape[1] == num_images))
  return columns[:, :width], settled


class _Source(abc.ABC):
  """The neighbour search; a source says how it finds a block's candidates."""

  num_query: int
  num_gallery: int
  rows_per_block: int
  maxima: np.ndarray

  @property
  def num_images(self) -> int:
    return self.num_query + self.num_gallery

  @abc.abstractmethod
  def _candidates(self, rows: np.ndarray, width: int):
    """Device (maxima, squared, columns) of the `width` smallest squared
    distances of images `rows` (ascending, at most rows_per_block)."""

  def _collect(self, rows, outputs, lists, width) -> np.ndarray:
    """Stores a block's neighbours; returns its rows still unsettled."""
    maxima, squared, columns = (np.asarray(a)[:len(rows)] for a in outputs)
    # A NaN or Inf anywhere in a row makes its maximum NaN or Inf.
    bad = np.flatnonzero(~np.isfinite(maxima) | (maxima == 0))
    if bad.size:
      what = ("hold NaN or Inf values" if not np.isfinite(maxima[bad[0]])
              else "are all 0: they cannot be scaled")
      raise RankInputError(
          f"re-ranking: the distances of image {int(rows[bad[0]])} (queries "
          f"first, then gallery) {what}")
    self.maxima[rows] = maxima
    lists[rows], settled = _by_key(maxima, squared, columns, width,
                                   self.num_images)
    return rows[~settled]

  def neighbours(self, width: int) -> tuple[np.ndarray, np.ndarray]:
    """((N, width) int32 nearest images by key, (N,) float32 maxima m).

    Raises:
      RankInputError: an image whose distances are all 0, or NaN or Inf.
    """
    num, block = self.num_images, self.rows_per_block
    lists = np.empty((num, width), np.int32)
    self.maxima = np.empty(num, np.float32)
    pending = np.arange(num)
    candidates = min(width + _MARGIN, num)
    while len(pending):
      unsettled, in_flight = [], None
      for start in range(0, len(pending), block):
        rows = pending[start:start + block]
        # One block computes while the previous one is read back, so at
        # most two blocks' buffers exist at a time.
        launched = (rows, self._candidates(rows, candidates))
        if in_flight is not None:
          unsettled.append(self._collect(*in_flight, lists, width))
        in_flight = launched
      unsettled.append(self._collect(*in_flight, lists, width))
      pending = np.concatenate(unsettled)
      candidates = min(2 * candidates, num)
    return lists, self.maxima


class FeatureSource(_Source):
  """Keys from features: D computed a block of rows at a time."""

  def __init__(self, query: np.ndarray, gallery: np.ndarray, metric: str,
               rows_per_block: int | None = None):
    query, gallery = rank_engine.check_features(query, gallery, metric)
    if not (np.isfinite(query).all() and np.isfinite(gallery).all()):
      raise RankInputError("features hold NaN or Inf values")
    if not len(query) or not len(gallery):
      raise RankInputError(
          f"re-ranking needs at least one query and one gallery image, got "
          f"{len(query)} and {len(gallery)}")
    self.metric = metric
    self.num_query, self.num_gallery = len(query), len(gallery)
    self.features = np.concatenate([query, gallery])
    self.squared_norms = np.einsum("ij,ij->i", self.features, self.features)
    self.rows_per_block = rows_per_block or min(block_rows(len(self.features)),
                                                len(self.features))
    self._device = (jnp.asarray(self.features),
                    jnp.asarray(self.squared_norms))

  def _rows(self, rows, size: int):
    """Features and squared norms of `rows`, zero-padded to `size` rows."""
    return (_padded(self.features[rows], size),
            _padded(self.squared_norms[rows], size))

  def _candidates(self, rows, width):
    return _feature_smallest(*self._rows(rows, self.rows_per_block),
                             *self._device, width=width, metric=self.metric)

  def pair_keys(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """key(rows[n], columns[n]) for each n, float32."""
    dot = np.einsum("ij,ij->i", self.features[rows], self.features[columns])
    if self.metric == "cosine":
      d = np.float32(1.0) - dot
    else:
      d = self.squared_norms[rows] + self.squared_norms[columns] - 2 * dot
    return (d * d) / self.maxima[rows]

  def query_gallery_keys(self, start: int, stop: int) -> np.ndarray:
    """(stop - start, num_gallery) keys of queries start..stop-1."""
    q = self.num_query
    gallery = tuple(a[q:] for a in self._device)
    # Fixed-size (padded) blocks: one compiled shape whatever the caller's.
    size = min(block_rows(self.num_gallery, limit=512), q)
    out = np.empty((stop - start, self.num_gallery), np.float32)
    for a in range(start, stop, size):
      b = min(a + size, stop)
      squared = _feature_squared(*self._rows(slice(a, b), size), *gallery,
                                 metric=self.metric)
      np.divide(np.asarray(squared)[:b - a], self.maxima[a:b, None],
                out=out[a - start:b - start])
    return out


def distance_matrices(query: np.ndarray, gallery: np.ndarray,
                      metric: str = "cosine",
                      rows_per_block: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float32 (q_g, q_q, g_g) for `re_ranking`, as the features path sees them
  (arguments as for `rerank.rerank_features`): XLA's GEMM rounds differently
  for different operand shapes, so these are computed as `FeatureSource` does,
  a block of rows against all N images."""
  source = FeatureSource(query, gallery, metric, rows_per_block)
  q, size = source.num_query, source.rows_per_block
  q_g = np.empty((q, source.num_gallery), np.float32)
  q_q = np.empty((q, q), np.float32)
  g_g = np.empty((source.num_gallery, source.num_gallery), np.float32)
  for start in range(0, source.num_images, size):
    rows = np.arange(start, min(start + size, source.num_images))
    d = np.asarray(_jitted_distances(*source._rows(rows, size),
                                     *source._device,
                                     metric=metric))[:len(rows)]
    is_query = rows < q
    q_q[rows[is_query]] = d[is_query, :q]
    q_g[rows[is_query]] = d[is_query, q:]
    g_g[rows[~is_query] - q] = d[~is_query, q:]
  return q_g, q_q, g_g


class DistanceSource(_Source):
  """Keys from the three given distance matrices, exactly the reference's."""

  def __init__(self, q_g_dist: np.ndarray, q_q_dist: np.ndarray,
               g_g_dist: np.ndarray, rows_per_block: int | None = None):
    q_g, q_q, g_g = (np.asarray(a) for a in (q_g_dist, q_q_dist, g_g_dist))
    if q_g.ndim != 2:
      raise RankInputError(f"q_g_dist must be 2-D, got shape {q_g.shape}")
    num_q, num_g = q_g.shape
    for name, arr, shape in (("q_q_dist", q_q, (num_q, num_q)),
                             ("g_g_dist", g_g, (num_g, num_g))):
      if arr.shape != shape:
        raise RankInputError(
            f"{name} has shape {arr.shape}; q_g_dist {q_g.shape} needs "
            f"{shape}")
    if num_q == 0 or num_g == 0:
      raise RankInputError(f"q_g_dist has shape {q_g.shape}: re-ranking "
                           f"needs at least one query and one gallery image")
    self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
    # The reference squares the concatenated matrix, i.e. in the common
    # dtype of the three.
    self.dtype = np.result_type(q_g, q_q, g_g)
    self.num_query, self.num_gallery = num_q, num_g
    self.rows_per_block = rows_per_block or min(block_rows(num_q + num_g),
                                                num_q + num_g)

  def _fill(self, out: np.ndarray, columns: np.ndarray, query: bool):
    """out[:] = D[:, columns].T for ascending query (or gallery) columns."""
    if not len(columns):
      return
    q = self.num_query
    # A contiguous run (the first pass) as a slice: a column slice reads
    # runs of memory, a list of columns one number per matrix row.
    index = (slice(columns[0], columns[-1] + 1)
             if columns[-1] - columns[0] + 1 == len(columns) else columns)
    if query:
      out[:, :q] = self.q_q[:, index].T
      out[:, q:] = self.q_g[index]
    else:
      out[:, :q] = self.q_g[:, index].T
      out[:, q:] = self.g_g[:, index].T

  def _squared_columns(self, images: np.ndarray) -> np.ndarray:
    """float32(D[:, images] ** 2).T for ascending `images`."""
    q = self.num_query
    block = np.empty((len(images), self.num_images), self.dtype)
    split = int(np.searchsorted(images, q))
    self._fill(block[:split], images[:split], query=True)
    self._fill(block[split:], images[split:] - q, query=False)
    return np.power(block, 2, out=block).astype(np.float32, copy=False)

  def _candidates(self, rows, width):
    return _smallest(_padded(self._squared_columns(rows),
                             self.rows_per_block), width=width, check=True)

  def _entries(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """D[rows[n], columns[n]] for each n, in the common dtype."""
    q = self.num_query
    out = np.empty(rows.shape, self.dtype)
    row_q, col_q = rows < q, columns < q
    for select, matrix, r, c in (
        (row_q & col_q, self.q_q, rows, columns),
        (row_q & ~col_q, self.q_g, rows, columns - q),
        (~row_q & col_q, self.q_g, columns, rows - q),  # D[q+a, i] = q_g[i, a]
        (~row_q & ~col_q, self.g_g, rows - q, columns - q)):
      out[select] = matrix[r[select], c[select]]
    return out

  def pair_keys(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """key(rows[n], columns[n]) for each n, float32."""
    d = self._entries(columns, rows)  # key(i, j) reads D[j, i].
    return np.power(d, 2).astype(np.float32) / self.maxima[rows]

  def query_gallery_keys(self, start: int, stop: int) -> np.ndarray:
    """(stop - start, num_gallery) keys of queries start..stop-1."""
    # D[q + g, i] = q_g[i, g]: the query's own row of q_g.
    block = self.q_g[start:stop].astype(self.dtype, copy=False)
    return np.power(block, 2).astype(np.float32) / self.maxima[start:stop,
                                                               None]
