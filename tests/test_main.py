"""End to end through driver.run and `python -m pshrnet_jax.main`, tiny sizes.

A synthetic Market-layout set (6 training and 6 test identities, 3 cameras,
64x32) read as mlr_market1501 trains a width-4 teacher for 2 epochs and the
student for 6, of 4 steps each. The tests check what a run leaves in its workdir
against independent recomputations (rank metrics from the exported student,
TensorBoard scalars against the configured learning rates, the exported
teacher against the last checkpoint), a second run on a finished workdir,
and the absl command line. The runs are the session fixtures of
conftest.py; bad input is in test_bad_input.py, resuming after a kill in
test_kill_resume.py (real processes) and test_reliability.py.
"""

import json
import os
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

import tiny_setup as tiny
from data_pipelines import pipeline
from pshrnet_jax import convert
from pshrnet_jax import driver
from pshrnet_jax.evaluation import features
from pshrnet_jax.models import factory


def _assert_same_variables(a, b, what):
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                          jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=f"{what} {path}")


def _reference_rank_metrics(query_f, gallery_f, query, gallery):
  """torchreid semantics written out: CMC rank-1/5/10 and mAP, percent.

  Distances are 1 - dot in float32, as the evaluator computes them: a
  freshly tiny_trained tiny model has features a few 1e-5 apart in cosine
  distance, so a ranking from float64 distances may break near-ties
  differently.
  """
  q_pids = np.array([r.pid for r in query])
  q_cams = np.array([r.camid for r in query])
  g_pids = np.array([r.pid for r in gallery])
  g_cams = np.array([r.camid for r in gallery])
  distances = 1.0 - query_f @ gallery_f.T
  cmc, aps = np.zeros(10), []
  for i in range(len(query)):
    keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
    order = np.argsort(distances[i][keep], kind="stable")
    hits = g_pids[keep][order] == q_pids[i]
    first = int(np.argmax(hits))
    cmc[first:] += 1
    ranks = np.flatnonzero(hits) + 1
    aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
  cmc = 100 * cmc / len(query)
  return {"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9],
          "mAP": 100 * np.mean(aps)}


def test_results_match_an_independent_evaluation(tiny_trained, tiny_source):
  results = tiny_trained["results"]
  with open(os.path.join(tiny_trained["workdir"], "results.json")) as f:
    assert json.load(f) == results
  assert results["model"] == "student"
  assert set(results["models"]) == {"student", "teacher"}
  for entry in (results, *results["models"].values()):
    for key in ("rank1", "rank5", "rank10", "mAP"):
      assert 0.0 <= entry[key] <= 100.0, (key, entry[key])
    assert entry["rank1"] <= entry["rank5"] <= entry["rank10"]
  # Recompute the student's numbers: its exported variables, LR queries
  # against the HR gallery, the ranking written out above.
  config = tiny.config_with(tiny_source)
  benchmark = driver.load_benchmark(config, tiny_trained["workdir"])
  model = factory.build_student(config.model, tiny.NUM_TRAIN_IDS)
  variables = convert.restore_variables(
      os.path.join(tiny_trained["workdir"], "phase2", "student"))
  feature_fn = features.make_feature_fn(model.apply)

  def extract(records, use_lr):
    out = []
    for batch in pipeline.make_eval_batches(
        records, image_size=tiny.IMAGE_SIZE, batch_size=24, use_lr=use_lr):
      f, _ = feature_fn(variables, batch["image"])
      out.append(np.asarray(f)[batch["valid"]])
    return np.concatenate(out).astype(np.float32)

  assert len(benchmark.query) == 18 and len(benchmark.gallery) == 18
  assert all(r.lr_path for r in benchmark.query)
  expected = _reference_rank_metrics(
      extract(benchmark.query, True), extract(benchmark.gallery, False),
      benchmark.query, benchmark.gallery)
  for key, value in expected.items():
    assert results[key] == pytest.approx(value, abs=0.01), key
  assert results["models"]["student"]["rank1"] == results["rank1"]


def test_run_writes_config_tensorboard_and_pictures(tiny_trained, tiny_source):
  workdir = tiny_trained["workdir"]
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  expected = json.loads(json.dumps(tiny.config_with(tiny_source).to_dict(),
                                   default=str))
  assert saved == expected
  for phase, groups in (("phase1", {"hrnet": tiny.HRNET_LR}),
                        ("phase2", {"hrnet": tiny.HRNET_LR,
                                    "sr": tiny.SR_LR})):
    scalars = tiny.read_scalars(os.path.join(workdir, "tensorboard", phase))
    losses = scalars["train/loss"]
    assert [s for s, _ in losses] == list(range(1, tiny.TOTAL_STEPS[phase] + 1))
    assert all(np.isfinite(v) and v > 0 for _, v in losses)
    assert set(k for k in scalars if k.startswith("lr/")) == {
        f"lr/{g}" for g in groups}
    for group, lr in groups.items():
      values = [v for _, v in scalars[f"lr/{group}"]]
      np.testing.assert_allclose(values, lr, rtol=1e-6)
  for name in ("cmc.png", "ranked_list.png"):
    with Image.open(os.path.join(workdir, name)) as image:
      image.load()
      assert image.width > 100 and image.height > 100, name


def test_parameter_groups_logged_with_their_counts(tiny_trained):
  log = tiny_trained["log"]
  student = convert.restore_variables(
      os.path.join(tiny_trained["workdir"], "phase2", "student"))["params"]
  counts = {"sr": sum(x.size for x in jax.tree.leaves(student["sr"])),
            "hrnet": sum(x.size for x in jax.tree.leaves(student["reid"]))}
  assert counts["sr"] > 0 and counts["hrnet"] > 0
  tables = {}
  for phase in ("phase1", "phase2"):
    start = log.index(f"{phase} parameter groups:")
    block = log[start:].split("\n")
    rows = {}
    for line in block[3:]:  # After the title, the SGD line and the header.
      cells = [c for c in line.split("  ") if c.strip()]
      if len(cells) < 5 or cells[0].strip() not in ("hrnet", "sr"):
        break
      rows[cells[0].strip()] = cells[3].strip()
    tables[phase] = rows
  assert tables["phase2"] == {k: f"{v:,}" for k, v in counts.items()}
  teacher = convert.restore_variables(
      os.path.join(tiny_trained["workdir"], "phase1", "teacher"))["params"]
  assert tables["phase1"] == {
      "hrnet": f"{sum(x.size for x in jax.tree.leaves(teacher)):,}",
      "sr": "0"}


def test_exports_equal_the_final_checkpoints(tiny_trained):
  for phase, export in (("phase1", "teacher"), ("phase2", "student")):
    manager = ocp.CheckpointManager(
        os.path.join(tiny_trained["workdir"], phase, "checkpoints"))
    total = tiny.TOTAL_STEPS[phase]
    assert manager.latest_step() == total
    state = manager.restore(total, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    manager.close()
    exported = convert.restore_variables(
        os.path.join(tiny_trained["workdir"], phase, export))
    assert int(state["step"]) == total
    _assert_same_variables(exported["params"], state["params"], phase)
    _assert_same_variables(exported["batch_stats"], state["batch_stats"],
                           phase)


def test_second_run_on_a_finished_workdir_does_not_retrain(tiny_trained,
                                                           tiny_source,
                                                           tmp_path):
  # A copy: the session's trained workdir is read by other workers' tests.
  workdir = tiny.copy_workdir(tiny_trained["workdir"], tmp_path)
  exports = {p: tiny.tree_hash(os.path.join(workdir, p))
             for p in ("phase1", "phase2")}
  with tiny.capture_logs() as logs:
    results = driver.run(tiny.config_with(tiny_source), workdir)
  for phase in ("phase1", "phase2"):
    total = tiny.TOTAL_STEPS[phase]
    assert f"{phase}: resumed from step {total} of {total}" in logs.text
    assert not any(m.startswith(f"{phase} step ") for m in logs.messages)
    assert tiny.tree_hash(os.path.join(workdir, phase)) == exports[phase]
  assert results == tiny_trained["results"]


def test_main_command_applies_overrides_in_eval_mode(tiny_trained, tiny_source,
                                                    tmp_path):
  """The absl command line: eval only, a benchmark config, overrides."""
  workdir = tiny.copy_workdir(tiny_trained["workdir"], tmp_path)
  os.remove(os.path.join(workdir, "results.json"))
  proc = subprocess.run(
      tiny.main_args(workdir, "--config.mode=eval",
                 f"--config.data.root={tiny_source}",
                 "--config.data.source=files",
                 "--config.data.image_size=(64, 32)",
                 "--config.data.p=4", "--config.data.k=2",
                 "--config.model.width=4",
                 "--config.model.head_planes=(4, 8, 16, 32)",
                 "--config.model.hrnet_modules=(1, 1, 1)",
                 "--config.model.hrnet_blocks=1",
                 "--config.model.sr_features=8", "--config.model.sr_blocks=2",
                 "--config.model.ca_reduction=2",
                 "--config.eval.batch_size=24",
                 "--config.eval.ranked_list_queries=2"),
      cwd=tiny.REPO, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results == tiny_trained["results"]
  assert "| all |" in proc.stdout and "Rank-1" in proc.stdout
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["mode"] == "eval"
  assert saved["model"]["width"] == 4
  assert saved["model"]["head_planes"] == [4, 8, 16, 32]
  assert saved["data"]["name"] == "mlr_market1501"
