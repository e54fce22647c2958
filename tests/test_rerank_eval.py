"""`--config.eval.rerank=True`: "+RR" figures beside the plain ones.

Runs the evaluation of the tiny trained workdir (conftest.py's session
fixture) again with re-ranking on, and checks that the "+RR" numbers are
the evaluation, with the same protocol, of the re-ranking of the very
features the run ranked. That this re-ranking is the reference's
(reference/rerank_numpy.py) is test_rerank.py's job, on features whose keys
are distinct by construction: a tiny trained model's features tie, and ties
are ordered differently by the reference's unstable argsort, and differently
on different CPUs.
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
