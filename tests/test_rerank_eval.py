"""`--config.eval.rerank=True`: "+RR" figures beside the plain ones.

Runs the evaluation of the tiny trained workdir (conftest.py's session
fixture) again with re-ranking on, and checks the "+RR" numbers against the
reference re-ranking (reference/rerank_numpy.py) of the very features the
run ranked, evaluated with the same protocol.
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
from reference import rerank_numpy


def test_eval_with_rerank_adds_rr_figures(tiny_trained, tiny_source,
                                          tmp_path, monkeypatch):
  workdir = tiny.copy_workdir(tiny_trained["workdir"], tmp_path)
  ranked = {}
  original = rerank.rerank_features

  def recording(query, gallery, *args, **kwargs):
    ranked[len(ranked)] = (np.array(query), np.array(gallery), args, kwargs)
    return original(query, gallery, *args, **kwargs)

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
    qf, gf, args, kwargs = ranked[index]
    assert args == (20, 6, 0.3) and kwargs == {"metric": "cosine"}
    expected = metrics.evaluate(
        rerank_numpy.re_ranking(1.0 - qf @ gf.T, 1.0 - qf @ qf.T,
                                1.0 - gf @ gf.T),
        q_pids, g_pids, q_cams, g_cams)
    got = entry["reranked"]
    assert got["protocol"] == "multi_shot"
    assert got["ap_convention"] == "torchreid"
    assert got["rank1"] == pytest.approx(100 * expected.rank(1), abs=0.01)
    assert got["mAP"] == pytest.approx(100 * expected.mAP, abs=0.01)
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


def test_bad_rerank_setting_is_refused_before_training(tiny_source, tmp_path):
  config = tiny.config_with(tiny_source, **{"eval.rerank_k1": 0})
  with pytest.raises(ConfigError, match=r"--config.eval.rerank_k1=0"):
    driver.run(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")
