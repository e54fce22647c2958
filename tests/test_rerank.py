"""k-reciprocal re-ranking: the reference's numbers, features, bounded memory.

The reference is `reference/rerank_numpy.py`, the dense numpy algorithm of
torchreid and fast-reid written out. Problems are a few hundred clustered
random images: distinct float32 distances, so no ties.
"""

import tracemalloc

import numpy as np
import pytest

from pshrnet_jax.evaluation import re_ranking
from pshrnet_jax.evaluation import re_ranking_features
from pshrnet_jax.evaluation import rerank
from pshrnet_jax.evaluation import rerank_neighbours
from pshrnet_jax.errors import RankInputError
from reference import rerank_numpy


def _clustered(num_query, num_gallery, *, seed, dim=16, ids=12,
               absent_ids=3):
  """L2-normalised features; the last `absent_ids` identities are queries only.

  Returns:
    (query features, gallery features, query pids).
  """
  rng = np.random.default_rng(seed)
  centroids = rng.standard_normal((ids, dim))
  q_pids = rng.integers(0, ids, num_query)
  g_pids = rng.integers(0, ids - absent_ids, num_gallery)

  def draw(pids):
    x = centroids[pids] + 0.7 * rng.standard_normal((len(pids), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

  return draw(q_pids), draw(g_pids), q_pids


def _cosine(a, b):
  return 1.0 - a @ b.T


@pytest.mark.parametrize("k1, k2, lambda_value", [
    (20, 6, 0.3), (5, 1, 0.5), (7, 3, 0.0), (4, 10, 1.0), (3, 2, 0.7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_the_reference_algorithm(k1, k2, lambda_value, dtype):
  qf, gf, q_pids = _clustered(24, 90, seed=k1 + k2)
  assert (q_pids >= 9).any() and (q_pids < 9).any()  # with and without matches
  qf, gf = qf.astype(dtype), gf.astype(dtype)
  args = (_cosine(qf, gf), _cosine(qf, qf), _cosine(gf, gf), k1, k2,
          lambda_value)
  expected = rerank_numpy.re_ranking(*args)
  got = re_ranking(*args)
  assert got.shape == (24, 90) and got.dtype == np.float32
  assert np.abs(got - expected).max() < 1e-5
  # Below lambda 1 the re-ranking changes the order (so the comparison is
  # not vacuous)...
  assert (lambda_value == 1.0) == np.array_equal(
      np.argsort(args[0], axis=1), np.argsort(expected, axis=1))
  # ...and ours is the reference's, rank for rank.
  np.testing.assert_array_equal(np.argsort(got, axis=1, kind="stable"),
                                np.argsort(expected, axis=1, kind="stable"))


def test_fewer_images_than_k1_and_squared_euclidean():
  qf, gf, _ = _clustered(4, 8, seed=3)
  sq = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)  # noqa: E731
  args = (sq(qf, gf), sq(qf, qf), sq(gf, gf))
  np.testing.assert_allclose(re_ranking(*args), rerank_numpy.re_ranking(*args),
                             rtol=0, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_features_path_equals_the_distance_path(metric):
  qf, gf, _ = _clustered(30, 150, seed=7, dim=32)

  def dist(a, b):
    if metric == "cosine":
      return _cosine(a, b)
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T)

  from_distances = re_ranking(dist(qf, gf), dist(qf, qf), dist(gf, gf))
  # Small neighbour blocks: several blocks and a padded last one.
  from_features = re_ranking_features(qf, gf, metric=metric,
                                      rows_per_block=64)
  assert np.abs(from_features - from_distances).max() < 1e-5


def test_rows_in_blocks_equal_the_whole(monkeypatch):
  qf, gf, _ = _clustered(20, 60, seed=11)
  reranked = rerank.rerank_features(qf, gf, k1=6, k2=3)
  whole = reranked.to_dense()
  # A pair budget of one query's worth: the Jaccard step goes query by query.
  monkeypatch.setattr(rerank, "_JACCARD_PAIRS", 1)
  np.testing.assert_array_equal(
      np.concatenate([reranked.rows(0, 7), reranked.rows(7, 20)]), whole)
  np.testing.assert_array_equal(reranked.rows(5, 5), whole[5:5])


def test_equal_keys_are_ordered_by_image_index():
  # Images 1 and 3 are copies of image 0: three keys of 0 in row 0.
  x = np.eye(4, 3, dtype=np.float32)
  x[1] = x[3] = x[0]
  x[2] = np.array([0.6, 0.8, 0.0], np.float32)
  source = rerank_neighbours.FeatureSource(x[:1], x[1:], "cosine")
  lists, maxima = source.neighbours(4)
  np.testing.assert_array_equal(lists[0], [0, 1, 3, 2])
  np.testing.assert_array_equal(lists[2], [2, 0, 1, 3])
  # Row 0's largest squared distance is image 2's: (1 - 0.6)^2 in float32.
  distance = np.float32(1.0) - np.float32(0.6)
  assert maxima[0] == distance * distance


def test_ties_beyond_the_candidates_are_searched_again():
  # 20 copies of one image (gallery 0..19, images 1..20): each copy has 20
  # keys of 0, more than the first search's 4 + 8 candidates hold.
  rng = np.random.default_rng(0)
  others = rng.standard_normal((6, 8)).astype(np.float32)
  others /= np.linalg.norm(others, axis=1, keepdims=True)
  copies = np.repeat(others[:1], 20, axis=0)
  source = rerank_neighbours.FeatureSource(others[1:2],
                                           np.concatenate([copies,
                                                           others[2:]]),
                                           "cosine", rows_per_block=8)
  lists, _ = source.neighbours(4)
  for image in range(1, 21):
    np.testing.assert_array_equal(lists[image], [1, 2, 3, 4])


def test_distance_matrices_are_the_features_paths():
  qf, gf, _ = _clustered(10, 40, seed=5)
  q_g, q_q, g_g = rerank_neighbours.distance_matrices(qf, gf,
                                                      rows_per_block=16)
  np.testing.assert_allclose(q_g, _cosine(qf, gf), rtol=0, atol=1e-6)
  np.testing.assert_allclose(g_g, _cosine(gf, gf), rtol=0, atol=1e-6)
  np.testing.assert_array_equal(q_q, q_q.T)
  np.testing.assert_array_equal(g_g, g_g.T)
  assert np.abs(re_ranking(q_g, q_q, g_g) - re_ranking_features(
      qf, gf, rows_per_block=16)).max() < 1e-6


def test_memory_is_linear_in_images(monkeypatch):
  """Largest arrays for N images: O(N * k1), never N x N.

  numpy's allocations are traced (tracemalloc); the jitted neighbour pass is
  checked through the shapes it is given.
  """
  monkeypatch.setattr(rerank, "_ROWS_PER_CHUNK", 256)
  block_shapes = []
  for name in ("_feature_smallest", "_feature_squared"):
    original = getattr(rerank_neighbours, name)

    def recording(*args, _original=original, **kwargs):
      block_shapes.append(max(a.size for a in args if hasattr(a, "size")))
      return _original(*args, **kwargs)

    monkeypatch.setattr(rerank_neighbours, name, recording)
  rows_per_block = 64
  peaks = {}
  for num_gallery in (1000, 4000):
    qf, gf, _ = _clustered(8, num_gallery, seed=num_gallery, dim=8, ids=400)
    block_shapes.clear()
    tracemalloc.start()
    final = rerank.rerank_features(qf, gf,
                                   rows_per_block=rows_per_block).to_dense()
    peaks[num_gallery] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    num_images = 8 + num_gallery
    assert final.shape == (8, num_gallery)
    assert max(block_shapes) <= rows_per_block * num_images
  num_images = 8 + 4000
  print(f"traced peaks: {peaks}")
  # Four times the images: about four times the memory, not sixteen, and
  # far below one N x N float32 matrix (64 MB).
  assert peaks[4000] < 6 * peaks[1000]
  assert peaks[4000] < num_images * num_images * 4 / 4
  assert peaks[4000] < 250 * num_images * (20 + 1)


@pytest.mark.parametrize("change, message", [
    (dict(q_q_dist=np.zeros((3, 3))), "q_q_dist has shape (3, 3)"),
    (dict(k1=0), "k1 must be an integer >= 1"),
    (dict(k2=2.5), "k2 must be an integer >= 1"),
    (dict(lambda_value=1.5), "lambda_value must lie in [0, 1]"),
    (dict(g_g_dist=np.full((6, 6), np.nan)), "image 4 .* hold NaN or Inf"),
    (dict(q_g_dist=np.full((4, 6), np.inf)), "image 0 .* hold NaN or Inf"),
])
def test_bad_input_raises_clear_error(change, message):
  qf, gf, _ = _clustered(4, 6, seed=0)
  args = dict(q_g_dist=_cosine(qf, gf), q_q_dist=_cosine(qf, qf),
              g_g_dist=_cosine(gf, gf))
  args.update(change)
  with pytest.raises(RankInputError, match=message.replace("(", r"\(")
                     .replace(")", r"\)").replace("[", r"\[")
                     .replace("]", r"\]")):
    re_ranking(**args)


def test_identical_features_are_an_error():
  same = np.ones((3, 4), np.float32) / 2
  with pytest.raises(RankInputError, match="image 0 .* are all 0"):
    re_ranking_features(same[:1], same[1:])


def test_features_path_within_a_derived_bound_of_the_reference():
  """The run's path (features, k1=20) is the reference's re-ranking of the
  distances of `qf` and `gf`, to the rounding of recomputed keys."""
  qf, gf, _ = _clustered(12, 24, seed=2, dim=16)
  distances = rerank.rerank_features(qf, gf, 20, 6, 0.3,
                                     metric="cosine").to_dense()
  # The distances the features path ranks its neighbours by, fed to both
  # our re-ranking and the reference: the same float32 operations in the
  # same order, so the same bits, as long as the two sort equal keys alike
  # (the reference with numpy's unstable argsort, ours by image index).
  q_g, q_q, g_g = rerank_neighbours.distance_matrices(qf, gf)
  squared = np.square(np.block([[q_q, q_g], [q_g.T, g_g]]))
  keys = (squared / squared.max(axis=0)).T  # key(i, j) = D[j, i]^2 / m_i
  # Keys at least 1e-5 (~80 float32 ulps at 1) apart: further than any
  # CPU's rounding of the distances moves them, so
  # both sides sort them alike on any machine.
  assert np.diff(np.sort(keys, axis=1), axis=1).min() > 1e-5
  reference = rerank_numpy.re_ranking(q_g, q_q, g_g)
  np.testing.assert_array_equal(rerank.re_ranking(q_g, q_q, g_g), reference)
  # The features path finds the same neighbours (the same GEMM) but
  # recomputes keys per pair with a numpy dot, off by up to `gap`. Keys off
  # by d change exp(-key) / sum by 2d relatively, the Jaccard overlap (sums
  # of two such rows) by 4d and the Jaccard distance by up to 8d, so the
  # result by 0.7 * 8d + 0.3 * d < 6d; plus each side's float32 sums of up
  # to N terms below 1, N eps each.
  source = rerank_neighbours.FeatureSource(qf, gf, "cosine")
  source.neighbours(21)  # As the run (k1 + 1): sets the rows' maxima m_i.
  num, q = len(keys), len(qf)
  rows, columns = np.divmod(np.arange(num * num), num)
  gap = max(np.abs(source.pair_keys(rows, columns).reshape(num, num)
                   - keys).max(),
            np.abs(source.query_gallery_keys(0, q) - keys[:q, q:]).max())
  bound = 6 * gap + 2 * num * np.finfo(np.float32).eps
  error = np.abs(distances - reference).max()
  print(f"features path vs reference: {error:.2e} (bound {bound:.2e})")
  assert error <= bound
