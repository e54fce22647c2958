"""The distances k-reciprocal re-ranking reads, a block of rows at a time.

Re-ranking treats the N = num_query + num_gallery images as one set, with
D = [[q_q, q_g], [q_g^T, g_g]] their N x N distances. The reference
(`reference/rerank_numpy.py`) squares D in the input dtype, casts it to
float32 and reads, for image i, column i of that divided by the column's
maximum. Here that value is the "key":

    key(i, j) = float32(D[j, i] ** 2) / m[i],   m[i] = max_j float32(D[j, i] ** 2)

A source gives, without ever holding D:

  * `neighbours(width)`: the `width` images of smallest key for every image,
    ordered by key, equal keys by image index, and m (one jitted top-k per
    block of rows);
  * `pair_keys(i, j)`: key(i, j) for a list of pairs;
  * `query_gallery_keys(start, stop)`: key(q, num_query + g) for a block of
    queries and the whole gallery.

`DistanceSource` reads given distance matrices and reproduces the
reference's keys bit for bit. `FeatureSource` computes distances from
features (cosine: 1 - dot; euclidean: squared, as torchreid's default) in a
jitted GEMM per block of rows; there D is symmetric up to float rounding, so
rows stand in for columns.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from pshrnet_jax.errors import RankInputError

METRICS = ("cosine", "euclidean")
# Rows per block of the neighbour pass: about this many float32 keys.
_BLOCK_ELEMENTS = 32 << 20


def block_rows(num_columns: int, limit: int = 2048) -> int:
  """Rows per block so that a (rows, num_columns) float32 block is ~128 MB."""
  return int(max(8, min(limit, _BLOCK_ELEMENTS // max(1, num_columns))))


@functools.partial(jax.jit, static_argnames=("width",))
def _top_keys(squared: jax.Array, width: int):
  """Row maxima and the `width` smallest keys' columns of a block."""
  maxima = jnp.max(squared, axis=1)
  keys = squared / maxima[:, None]
  # lax.top_k keeps the lower index first among equal values.
  _, columns = jax.lax.top_k(-keys, width)
  return maxima, columns


def _feature_distances(rows, rows_sq, columns, columns_sq, metric):
  dot = jnp.matmul(rows, columns.T, precision=jax.lax.Precision.HIGHEST)
  if metric == "cosine":
    return 1.0 - dot
  return rows_sq[:, None] + columns_sq[None, :] - 2.0 * dot


@functools.partial(jax.jit, static_argnames=("width", "metric"))
def _feature_top_keys(rows, rows_sq, everything, everything_sq, width,
                      metric):
  d = _feature_distances(rows, rows_sq, everything, everything_sq, metric)
  return _top_keys(d * d, width)


@functools.partial(jax.jit, static_argnames=("metric",))
def _feature_keys(rows, rows_sq, maxima, columns, columns_sq, metric):
  d = _feature_distances(rows, rows_sq, columns, columns_sq, metric)
  return (d * d) / maxima[:, None]


def _blocks(num_rows: int, rows: int) -> Iterator[tuple[int, int]]:
  for start in range(0, num_rows, rows):
    yield start, min(start + rows, num_rows)


def _padded(block: np.ndarray, rows: int) -> np.ndarray:
  """`block` with zero rows appended up to `rows`: one compiled shape."""
  if block.shape[0] == rows:
    return block
  pad = np.zeros((rows - block.shape[0],) + block.shape[1:], block.dtype)
  return np.concatenate([block, pad])


def _check_maxima(maxima: np.ndarray, start: int) -> None:
  bad = np.flatnonzero(~(maxima > 0))
  if bad.size:
    raise RankInputError(
        f"re-ranking: image {start + int(bad[0])} (query first, then "
        f"gallery) has distance 0 or NaN to every image; its distances "
        f"cannot be scaled")


class FeatureSource:
  """Keys from features: D computed a block of rows at a time."""

  def __init__(self, query: np.ndarray, gallery: np.ndarray, metric: str,
               rows_per_block: int | None = None):
    if metric not in METRICS:
      raise RankInputError(f"unknown metric {metric!r}; use one of {METRICS}")
    query = np.asarray(query, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    if (query.ndim != 2 or gallery.ndim != 2 or
        query.shape[1] != gallery.shape[1]):
      raise RankInputError(
          f"features must be (n, dim) with the same dim, got query "
          f"{query.shape} and gallery {gallery.shape}")
    if not (np.isfinite(query).all() and np.isfinite(gallery).all()):
      raise RankInputError("features hold NaN or Inf values")
    self.metric = metric
    self.num_query, self.num_gallery = len(query), len(gallery)
    self.features = np.concatenate([query, gallery])
    self.squared_norms = np.einsum("ij,ij->i", self.features, self.features)
    self.rows_per_block = rows_per_block or block_rows(len(self.features))
    self.maxima = None  # set by `neighbours`, with the device arrays:
    self._gallery = None

  @property
  def num_images(self) -> int:
    return len(self.features)

  def neighbours(self, width: int) -> tuple[np.ndarray, np.ndarray]:
    """((N, width) int32 nearest images by key, (N,) float32 maxima m)."""
    rows = self.rows_per_block
    everything = jnp.asarray(self.features)
    everything_sq = jnp.asarray(self.squared_norms)
    q = self.num_query
    self._gallery = (everything[q:], everything_sq[q:])
    outputs = []
    for start, stop in _blocks(self.num_images, rows):
      outputs.append((start, stop, _feature_top_keys(
          _padded(self.features[start:stop], rows),
          _padded(self.squared_norms[start:stop], rows), everything,
          everything_sq, width=width, metric=self.metric)))
    maxima = np.empty(self.num_images, np.float32)
    lists = np.empty((self.num_images, width), np.int32)
    for start, stop, (block_max, block_lists) in outputs:
      maxima[start:stop] = np.asarray(block_max)[:stop - start]
      lists[start:stop] = np.asarray(block_lists)[:stop - start]
    _check_maxima(maxima, 0)
    self.maxima = maxima
    return lists, maxima

  def pair_keys(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """key(rows[n], columns[n]) for each n, float32."""
    a, b = self.features[rows], self.features[columns]
    dot = np.einsum("ij,ij->i", a, b)
    if self.metric == "cosine":
      d = np.float32(1.0) - dot
    else:
      d = self.squared_norms[rows] + self.squared_norms[columns] - 2 * dot
    return (d * d) / self.maxima[rows]

  def query_gallery_keys(self, start: int, stop: int) -> np.ndarray:
    """(stop - start, num_gallery) keys of queries start..stop-1."""
    q = self.num_query
    # Fixed-size (padded) blocks: one compiled shape whatever the caller's.
    rows = min(block_rows(self.num_gallery, limit=512), q)
    out = np.empty((stop - start, self.num_gallery), np.float32)
    for a, b in _blocks(stop - start, rows):
      a, b = start + a, start + b
      keys = _feature_keys(
          _padded(self.features[a:b], rows),
          _padded(self.squared_norms[a:b], rows),
          _padded(self.maxima[a:b], rows), *self._gallery,
          metric=self.metric)
      out[a - start:b - start] = np.asarray(keys)[:b - a]
    return out


class DistanceSource:
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
    self.rows_per_block = rows_per_block or block_rows(num_q + num_g)
    self.maxima = None

  @property
  def num_images(self) -> int:
    return self.num_query + self.num_gallery

  def _squared_columns(self, start: int, stop: int) -> np.ndarray:
    """float32(D[:, start:stop] ** 2).T: rows of the reference's matrix."""
    q = self.num_query
    if stop <= q:
      block = np.concatenate(
          [self.q_q[:, start:stop].T, self.q_g[start:stop]], axis=1)
    else:
      a, b = start - q, stop - q
      block = np.concatenate(
          [self.q_g[:, a:b].T, self.g_g[:, a:b].T], axis=1)
    if np.isnan(block).any():
      raise RankInputError(
          f"distance matrices hold NaN values (in the column of image "
          f"{start + int(np.flatnonzero(np.isnan(block).any(axis=1))[0])}, "
          f"query first, then gallery)")
    return np.power(block.astype(self.dtype, copy=False),
                    2).astype(np.float32)

  def neighbours(self, width: int) -> tuple[np.ndarray, np.ndarray]:
    """((N, width) int32 nearest images by key, (N,) float32 maxima m)."""
    rows, q = self.rows_per_block, self.num_query
    # Blocks never straddle the query/gallery border: their columns come
    # from different matrices.
    spans = [(s, e) for s, e in _blocks(q, rows)] + [
        (q + s, q + e) for s, e in _blocks(self.num_gallery, rows)]
    outputs = [(s, e, _top_keys(_padded(self._squared_columns(s, e), rows),
                                width=width)) for s, e in spans]
    maxima = np.empty(self.num_images, np.float32)
    lists = np.empty((self.num_images, width), np.int32)
    for start, stop, (block_max, block_lists) in outputs:
      maxima[start:stop] = np.asarray(block_max)[:stop - start]
      lists[start:stop] = np.asarray(block_lists)[:stop - start]
    _check_maxima(maxima, 0)
    self.maxima = maxima
    return lists, maxima

  def _entries(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """D[rows[n], columns[n]] for each n, in the input dtype."""
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
    squared = np.power(block, 2).astype(np.float32)
    return squared / self.maxima[start:stop, None]
