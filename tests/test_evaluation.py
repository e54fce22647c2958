"""Re-ID metrics: hand-computed rules and exact agreement with torchreid's logic."""

import numpy as np
import pytest

from reference import torchreid_rank
from pshrnet_jax import evaluation
from pshrnet_jax.evaluation import rank_engine
from pshrnet_jax.evaluation import RankInputError, evaluate, evaluate_rank


def _one_query(ranked_matches, q_cam=0):
  """A single query whose gallery, ranked by distance, matches as given."""
  n = len(ranked_matches)
  distmat = np.arange(1, n + 1, dtype=np.float32)[None]
  g_pids = np.where(np.asarray(ranked_matches) == 1, 7, 100 + np.arange(n))
  return distmat, np.array([7]), g_pids, np.array([q_cam]), np.ones(n, int)


def _random_problem(seed, num_q=40, num_g=300, num_ids=25, num_cams=4,
                    ties=False):
  rng = np.random.default_rng(seed)
  q_pids = rng.integers(0, num_ids, num_q)
  g_pids = rng.integers(0, num_ids, num_g)
  q_cams = rng.integers(0, num_cams, num_q)
  g_cams = rng.integers(0, num_cams, num_g)
  if ties:
    distmat = rng.integers(0, 20, (num_q, num_g)).astype(np.float32)
  else:
    # Matching identities are closer on average, so ranks are not uniform.
    distmat = rng.random((num_q, num_g)) + 0.6 * (
        q_pids[:, None] != g_pids[None])
  return distmat, q_pids, g_pids, q_cams, g_cams


def test_ap_of_ranked_list_0101_is_half():
  cmc, m_ap = evaluate_rank(*_one_query([0, 1, 0, 1]), max_rank=4)
  assert m_ap == 0.5  # (1/2 + 2/4) / 2
  np.testing.assert_array_equal(cmc, [0, 1, 1, 1])


def test_same_id_same_camera_entries_are_removed():
  # Gallery: same id & camera (nearest), other id, same id other camera.
  distmat = np.array([[0.1, 0.2, 0.3]])
  args = (np.array([1]), np.array([1, 2, 1]), np.array([0]),
          np.array([0, 0, 1]))
  cmc, m_ap = evaluate_rank(distmat, *args, max_rank=3)
  # Kept ranking: [id 2, id 1 (cam 1)] -> first match at rank 2, AP 1/2;
  # only 2 entries are kept, so rank 3 is padded with 1.
  np.testing.assert_array_equal(cmc, [0, 1, 1])
  assert m_ap == 0.5


def test_queries_without_kept_match_are_skipped():
  distmat = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
  q_pids, g_pids = np.array([1, 1, 3]), np.array([1, 2])
  q_cams, g_cams = np.array([0, 1, 0]), np.array([0, 0])
  # Query 0: its match has its camera (removed) -> skipped. Query 2: id 3 not
  # in gallery -> skipped. Query 1: match at rank 1.
  cmc, m_ap = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
  np.testing.assert_array_equal(cmc, [1, 1])
  assert m_ap == 1.0
  result = evaluate(distmat, q_pids, g_pids, q_cams, g_cams)
  assert (result.num_valid_queries, result.num_queries) == (1, 3)
  released = evaluate(distmat, q_pids, g_pids, q_cams, g_cams,
                      ap_convention="released")
  # Released code divides by all 3 queries.
  np.testing.assert_allclose(released.cmc, [1 / 3, 1 / 3])
  assert released.mAP == pytest.approx(1 / 3)


def test_cmc_is_clipped_cumulative_over_valid_queries():
  # Query A: matches at ranks 2 and 3; query B: match at rank 1.
  distmat = np.array([[1, 2, 3, 4], [4, 3, 2, 1]], dtype=np.float32)
  g_pids = np.array([9, 5, 5, 8])
  cmc, _ = evaluate_rank(distmat, np.array([5, 8]), g_pids, np.array([0, 0]),
                         np.array([1, 1, 1, 1]), max_rank=4)
  np.testing.assert_array_equal(cmc, [0.5, 1, 1, 1])


def test_released_trapezoid_ap_and_minp():
  result = evaluate(*_one_query([0, 1, 0, 1]), ap_convention="released")
  # i=0: precision 1/2, before 0/1; i=1: precision 2/4, before 1/3.
  expected = 0.5 * (0 + 0.5) / 2 + 0.5 * (1 / 3 + 0.5) / 2
  assert result.mAP == pytest.approx(expected, abs=1e-15)
  # Precision before the first rank counts as 1 when rank 1 is a match.
  first = evaluate(*_one_query([1, 0, 1]), ap_convention="released")
  assert first.mAP == pytest.approx(0.5 * (1 + 1) / 2 + 0.5 * (1 / 2 + 2 / 3)
                                    / 2, abs=1e-15)
  # mINP: 2 positives, hardest at rank 5 -> 2/5.
  assert evaluate(*_one_query([1, 0, 0, 0, 1, 0])).mINP == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(6))
def test_market_matches_torchreid_reference_exactly(seed):
  problem = _random_problem(seed)
  ref_cmc, ref_map, ref_minp, ref_valid = torchreid_rank.eval_market1501(
      *problem, 50)
  cmc, m_ap = evaluate_rank(*problem)
  assert cmc.dtype == np.float32
  np.testing.assert_array_equal(cmc, ref_cmc)
  assert m_ap == ref_map  # Bit for bit, pairwise summation included.
  result = evaluate(*problem, chunk_size=7)
  np.testing.assert_array_equal(result.cmc, ref_cmc)
  assert result.mAP == ref_map
  assert result.mINP == pytest.approx(ref_minp, rel=1e-12)
  assert result.num_valid_queries == ref_valid


def test_tied_distances_follow_stable_argsort():
  problem = _random_problem(11, ties=True)
  ref_cmc, ref_map, _, _ = torchreid_rank.eval_market1501(*problem, 50)
  cmc, m_ap = evaluate_rank(*problem)
  np.testing.assert_array_equal(cmc, ref_cmc)
  assert m_ap == ref_map


@pytest.mark.parametrize("seed", range(3))
def test_released_matches_reference(seed):
  distmat, q_pids, g_pids, q_cams, g_cams = _random_problem(seed + 20)
  g_pids = g_pids.copy()
  g_pids[:15] = -1  # Junk, removed by the released code.
  ref_cmc, ref_map = torchreid_rank.eval_released(distmat, q_pids, g_pids,
                                                  q_cams, g_cams, 50)
  result = evaluate(distmat, q_pids, g_pids, q_cams, g_cams,
                    ap_convention="released")
  np.testing.assert_allclose(result.cmc, ref_cmc, rtol=1e-6)
  assert result.mAP == pytest.approx(ref_map, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_cuhk03_metric_reproduces_torchreid_random_draws(seed):
  problem = _random_problem(seed + 40, num_q=25, num_g=120, num_ids=12)
  np.random.seed(seed)
  ref_cmc, ref_map = torchreid_rank.eval_cuhk03(*problem, 10)
  np.random.seed(seed)
  cmc, m_ap = evaluate_rank(*problem, max_rank=10, use_metric_cuhk03=True)
  np.testing.assert_array_equal(cmc, ref_cmc)
  assert m_ap == ref_map


def test_single_shot_trials_are_seeded_and_averaged():
  # Query id 1 (cam 0). Gallery: id 1 at 0.5 and 0.9, id 2 at 0.7 (cam 1).
  # A trial keeping the 0.5 image ranks the match 1st (AP 1), else 2nd (1/2).
  distmat = np.array([[0.5, 0.9, 0.7]])
  args = (np.array([1]), np.array([1, 1, 2]), np.array([0]),
          np.array([1, 1, 1]))
  result = evaluate(distmat, *args, protocol="single_shot", trials=8, seed=3)
  rng = np.random.default_rng(3)
  near = np.array([rng.integers(0, [2, 1])[0] == 0 for _ in range(8)])
  np.testing.assert_array_equal(result.trials.cmc[:, 0], near)
  np.testing.assert_allclose(result.trials.mAP, np.where(near, 1.0, 0.5))
  assert result.rank(1) == pytest.approx(near.mean())
  assert result.mAP == pytest.approx(np.where(near, 1.0, 0.5).mean())
  assert result.trials.mAP_std == pytest.approx(np.where(near, 1.0, 0.5).std())
  assert 0 < near.sum() < 8  # Both outcomes occur, so averaging is tested.
  again = evaluate(distmat, *args, protocol="single_shot", trials=8, seed=3)
  np.testing.assert_array_equal(again.trials.cmc, result.trials.cmc)


def test_per_factor_breakdown():
  # Queries 0, 1 (x2) match at ranks 1 and 2; query 2 (x4) at rank 3.
  distmat = np.array([[1, 2, 3], [2, 1, 3], [3, 2, 1]], dtype=np.float32)
  g_pids = np.array([10, 20, 30])
  result = evaluate(distmat, np.array([10, 10, 10]), g_pids,
                    np.zeros(3, int), np.ones(3, int), max_rank=3,
                    q_lr_factors=[2, 2, 4])
  assert sorted(result.per_factor) == [2, 4]
  np.testing.assert_allclose(result.per_factor[2].cmc, [0.5, 1, 1])
  assert result.per_factor[2].mAP == pytest.approx((1 + 0.5) / 2)
  np.testing.assert_allclose(result.per_factor[4].cmc, [0, 0, 1])
  assert result.per_factor[4].mAP == pytest.approx(1 / 3)
  np.testing.assert_allclose(result.cmc, [1 / 3, 2 / 3, 1])


def test_features_entry_point_matches_distmat():
  rng = np.random.default_rng(5)
  qf = rng.standard_normal((30, 8)).astype(np.float32)
  gf = rng.standard_normal((90, 8)).astype(np.float32)
  q_pids, g_pids = rng.integers(0, 9, 30), rng.integers(0, 9, 90)
  q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 90)
  for metric, distmat in (
      ("cosine", 1.0 - qf.astype(np.float64) @ gf.T),
      ("euclidean", ((qf[:, None].astype(np.float64) - gf[None]) ** 2).sum(-1))):
    by_features = evaluation.evaluate_features(
        qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, chunk_size=4)
    by_matrix = evaluate(distmat, q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_allclose(by_features.cmc, by_matrix.cmc)
    assert by_features.mAP == pytest.approx(by_matrix.mAP, rel=1e-12)


def test_pairwise_sum_emulation_matches_numpy():
  rng = np.random.default_rng(0)
  for n in (1, 5, 8, 9, 127, 128, 129, 300, 9000, 20000):
    for _ in range(20):
      k = int(rng.integers(1, min(n, 40) + 1))
      pos = np.sort(rng.choice(n, k, replace=False))
      arr = np.zeros(n)
      arr[pos] = rng.random(k)
      assert rank_engine.numpy_pairwise_sum(
          pos.tolist(), arr[pos].tolist(), n) == arr.sum()


@pytest.mark.parametrize("change, message", [
    (lambda p: (p[0], p[1][:-1]) + p[2:], "mismatched query lengths"),
    (lambda p: (p[0][:, :0], p[1], p[2][:0], p[3], p[4][:0]),
     "empty gallery"),
    (lambda p: (np.where(np.eye(*p[0].shape) > 0, np.nan, p[0]),) + p[1:],
     "NaN"),
    (lambda p: (p[0], p[1] + 1000) + p[2:], "no query identity"),
])
def test_bad_input_raises_clear_error(change, message):
  problem = change(_random_problem(1, num_q=6, num_g=20))
  with pytest.raises(RankInputError, match=message):
    evaluate_rank(*problem)
  assert issubclass(RankInputError, ValueError)
