"""`--config.eval.rerank=True`: "+RR" figures beside the plain ones.

Runs the evaluation of the tiny trained workdir (conftest.py's session
fixture) again with re-ranking on, and checks that the "+RR" numbers are
the evaluation, with the same protocol, of the re-ranking of the very
features the run ranked, and that this re-ranking is the reference's
(reference/rerank_numpy.py) on the same distance matrices.
"""

import json
import os

import numpy as np
import pytest

import tiny_setup as tiny
from pshrnet_jax import driver
from pshrnet_jax.errors import ConfigError
from pshrnet_jax.evaluation import metrics
from pshrnet_jax.evaluation import rerank
from pshrnet_jax.evaluation import rerank_neighbours
from reference import rerank_numpy


def test_eval_with_rerank_adds_rr_figures(tiny_trained, tiny_source,
                                          tmp_path, monkeypatch):
  workdir = tiny.copy_workdir(tiny_trained["workdir"], tmp_path)
  ranked = []
  original = rerank.rerank_features

  def recording(query, gallery, *args, **kwargs):
    reranked = original(query, gallery, *args, **kwargs)
    ranked.append((np.array(query), np.array(gallery), args, kwargs,
                   reranked))
    return reranked

  monkeypatch.setattr(rerank, "rerank_features", recording)
  config = tiny.config_with(tiny_source, mode="eval",
                            **{"eval.rerank": True})
  results = driver.run(config, workdir)

  plain = tiny_trained["results"]
  assert results["gallery_exclusion"] == "same_identity_same_camera"
  assert results["rerank"]["k1"] == 20 and results["rerank"]["k2"] == 6
  assert results["rerank"]["lambda"] == 0.3
  assert "same protocol and AP convention" in results["rerank"]["note"]
  benchmark = driver.load_benchmark(config, workdir)
  q_pids = np.array([r.pid for r in benchmark.query])
  g_pids = np.array([r.pid for r in benchmark.gallery])
  q_cams = np.array([r.camid for r in benchmark.query])
  g_cams = np.array([r.camid for r in benchmark.gallery])
  assert len(ranked) == 2  # student, then teacher
  for index, label in enumerate(("student", "teacher")):
    entry = results["models"][label]
    for key in ("rank1", "rank5", "mAP", "mINP"):
      assert entry[key] == plain["models"][label][key], (label, key)
    qf, gf, args, kwargs, reranked = ranked[index]
    assert args == (20, 6, 0.3) and kwargs == {"metric": "cosine"}
    distances = reranked.to_dense()
    expected = metrics.evaluate(distances, q_pids, g_pids, q_cams, g_cams)
    got = entry["reranked"]
    assert got["protocol"] == "multi_shot"
    assert got["ap_convention"] == "torchreid"
    for key, value in (("rank1", expected.rank(1)),
                       ("rank5", expected.rank(5)), ("mAP", expected.mAP),
                       ("mINP", expected.mINP)):
      assert got[key] == pytest.approx(100 * value, abs=0.005), (label, key)
    _assert_reference_reranking(qf, gf, distances)
  assert results["reranked"] == results["models"]["student"]["reranked"]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == results
  with open(os.path.join(workdir, "results.md")) as f:
    markdown = f.read()
  student_rr = results["reranked"]
  assert (f"| all +RR | {student_rr['rank1']:.2f} | "
          f"{student_rr['rank5']:.2f} |") in markdown
  assert markdown.count("| all +RR |") == 2
  assert "+RR: k-reciprocal re-ranking" in markdown


def _assert_reference_reranking(qf, gf, distances):
  """`distances` (the features path) are the reference's re-ranking of the
  distances of `qf` and `gf`, to the rounding of recomputed keys."""
  # The distances the features path ranks its neighbours by, fed to both
  # our re-ranking and the reference: the same float32 operations in the
  # same order, so the same bits, as long as the two sort equal keys alike
  # (the reference with numpy's unstable argsort, ours by image index).
  q_g, q_q, g_g = rerank_neighbours.distance_matrices(qf, gf)
  squared = np.square(np.block([[q_q, q_g], [q_g.T, g_g]]))
  keys = (squared / squared.max(axis=0)).T  # key(i, j) = D[j, i]^2 / m_i
  assert (np.diff(np.sort(keys, axis=1), axis=1) > 0).all(), (
      "equal keys, which the two may order differently")
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


def test_bad_rerank_setting_is_refused_before_training(tiny_source, tmp_path):
  config = tiny.config_with(tiny_source, **{"eval.rerank_k1": 0})
  with pytest.raises(ConfigError, match=r"--config.eval.rerank_k1=0"):
    driver.run(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")
