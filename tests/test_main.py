"""End to end through train.run and `python -m pshrnet_jax.main`, tiny sizes.

A synthetic Market-layout set (6 training and 6 test identities, 3 cameras,
64x32) read as mlr_market1501 trains a width-4 teacher for 2 epochs and the
student for 6, of 4 steps each. The tests check what a run leaves in its workdir
against independent recomputations (rank metrics from the exported student,
TensorBoard scalars against the configured learning rates, the exported
teacher against the last checkpoint), resuming after a kill, a second run
on a finished workdir, and one clear error for each kind of bad input with
the checkpoints left as they were.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2

import multidevice_step as tiny
from data_pipelines import errors
from data_pipelines import pipeline
from pshrnet_jax import checkpoint
from pshrnet_jax import convert
from pshrnet_jax import features
from pshrnet_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = {"phase1": tiny.STEPS_PER_EPOCH * tiny.PHASE1_EPOCHS,
               "phase2": tiny.STEPS_PER_EPOCH * tiny.PHASE2_EPOCHS}
KILL_AFTER_STEP = 4
# The phase-1 runs that are killed and resumed save every 4 steps.
_PHASE1_ONLY = {"mode": "phase1", "train.checkpoint_every_steps": 4}


class _Killed(Exception):
  """Stands for the process dying right after a checkpoint was written."""


class _LogCapture(logging.Handler):
  """Collects absl log messages (absl logs through the 'absl' logger)."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())

  @property
  def text(self) -> str:
    return "\n".join(self.messages)


@contextlib.contextmanager
def _capture_logs():
  handler = _LogCapture()
  logger = logging.getLogger("absl")
  old_level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    yield handler
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _tree_hash(path: str) -> str:
  """Hash of every file's relative path and bytes under `path`."""
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(path)):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      digest.update(os.path.relpath(full, path).encode())
      with open(full, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def _config(source, **overrides):
  config = tiny.tiny_config(source)
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def _assert_same_variables(a, b, what):
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                          jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=f"{what} {path}")


def _main_args(workdir, *overrides, config_file="configs/mlr_market1501.py"):
  cache = jax.config.jax_compilation_cache_dir
  return [sys.executable, "-m", "pshrnet_jax.main", f"--config={config_file}",
          f"--workdir={workdir}", f"--config.compilation_cache_dir={cache}",
          *overrides]


def _read_scalars(event_dir: str) -> dict[str, list[tuple[int, float]]]:
  """Scalars of the TFRecord event files in `event_dir`, by tag."""
  scalars = {}
  files = [f for f in os.listdir(event_dir) if "tfevents" in f]
  assert files, f"no event file in {event_dir}"
  for name in files:
    with open(os.path.join(event_dir, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step,
                                                  value.simple_value))
  return scalars


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return tiny.make_tiny_source(str(tmp_path_factory.mktemp("data") / "src"))


@pytest.fixture(scope="module")
def trained(source, tmp_path_factory):
  """A full run (phase 1, phase 2, evaluation) in one workdir."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  with _capture_logs() as logs:
    results = train.run(_config(source), workdir)
  return {"workdir": workdir, "results": results, "log": logs.text}


@pytest.fixture(scope="module")
def killed(source, tmp_path_factory):
  """Phase 1 stopped right after its checkpoint at step KILL_AFTER_STEP."""
  workdir = str(tmp_path_factory.mktemp("killed"))
  original_save = checkpoint.PhaseCheckpointer.save

  def save_then_die(self, step, *args, **kwargs):
    started = original_save(self, step, *args, **kwargs)
    if step == KILL_AFTER_STEP:
      self.wait_until_finished()
      raise _Killed(step)
    return started

  patch = pytest.MonkeyPatch()
  patch.setattr(checkpoint.PhaseCheckpointer, "save", save_then_die)
  try:
    with pytest.raises(_Killed):
      train.run(_config(source, **_PHASE1_ONLY), workdir)
  finally:
    patch.undo()
  return workdir


def _copy_workdir(src, tmp_path):
  dst = str(tmp_path / "workdir")
  shutil.copytree(src, dst)
  return dst


def _reference_rank_metrics(query_f, gallery_f, query, gallery):
  """torchreid semantics written out: CMC rank-1/5/10 and mAP, percent.

  Distances are 1 - dot in float32, as the evaluator computes them: a
  freshly trained tiny model has features a few 1e-5 apart in cosine
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


def test_results_match_an_independent_evaluation(trained, source):
  results = trained["results"]
  with open(os.path.join(trained["workdir"], "results.json")) as f:
    assert json.load(f) == results
  assert results["model"] == "student"
  assert set(results["models"]) == {"student", "teacher"}
  for entry in (results, *results["models"].values()):
    for key in ("rank1", "rank5", "rank10", "mAP"):
      assert 0.0 <= entry[key] <= 100.0, (key, entry[key])
    assert entry["rank1"] <= entry["rank5"] <= entry["rank10"]
  # Recompute the student's numbers: its exported variables, LR queries
  # against the HR gallery, the ranking written out above.
  config = _config(source)
  benchmark = train.load_benchmark(config, trained["workdir"])
  model = train.build_student(config, tiny.NUM_TRAIN_IDS)
  variables = convert.restore_variables(
      os.path.join(trained["workdir"], "phase2", "student"))
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


def test_run_writes_config_tensorboard_and_pictures(trained, source):
  workdir = trained["workdir"]
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  expected = json.loads(json.dumps(_config(source).to_dict(), default=str))
  assert saved == expected
  for phase, groups in (("phase1", {"hrnet": tiny.HRNET_LR}),
                        ("phase2", {"hrnet": tiny.HRNET_LR,
                                    "sr": tiny.SR_LR})):
    scalars = _read_scalars(os.path.join(workdir, "tensorboard", phase))
    losses = scalars["train/loss"]
    assert [s for s, _ in losses] == list(range(1, TOTAL_STEPS[phase] + 1))
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


def test_parameter_groups_logged_with_their_counts(trained):
  log = trained["log"]
  student = convert.restore_variables(
      os.path.join(trained["workdir"], "phase2", "student"))["params"]
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
      os.path.join(trained["workdir"], "phase1", "teacher"))["params"]
  assert tables["phase1"] == {
      "hrnet": f"{sum(x.size for x in jax.tree.leaves(teacher)):,}",
      "sr": "0"}


def test_exports_equal_the_final_checkpoints(trained):
  for phase, export in (("phase1", "teacher"), ("phase2", "student")):
    manager = ocp.CheckpointManager(
        os.path.join(trained["workdir"], phase, "checkpoints"))
    total = TOTAL_STEPS[phase]
    assert manager.latest_step() == total
    state = manager.restore(total, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    manager.close()
    exported = convert.restore_variables(
        os.path.join(trained["workdir"], phase, export))
    assert int(state["step"]) == total
    _assert_same_variables(exported["params"], state["params"], phase)
    _assert_same_variables(exported["batch_stats"], state["batch_stats"],
                           phase)


def test_resume_after_kill_ends_like_an_uninterrupted_run(killed, trained,
                                                          source, tmp_path):
  workdir = _copy_workdir(killed, tmp_path)
  manager = ocp.CheckpointManager(os.path.join(workdir, "phase1",
                                               "checkpoints"))
  assert manager.all_steps() == [KILL_AFTER_STEP]
  manager.close()
  assert not os.path.exists(os.path.join(workdir, "phase1", "teacher"))
  total = TOTAL_STEPS["phase1"]
  with _capture_logs() as logs:
    train.run(_config(source, **_PHASE1_ONLY), workdir)
  assert (f"phase1: resumed from step {KILL_AFTER_STEP} of {total}"
          in logs.text)
  trained_steps = [m.split()[2] for m in logs.messages
                   if m.startswith("phase1 step ")]
  assert trained_steps == [f"{s}/{total}" for s in
                           range(KILL_AFTER_STEP + 1, total + 1)]
  resumed = convert.restore_variables(os.path.join(workdir, "phase1",
                                                   "teacher"))
  uninterrupted = convert.restore_variables(
      os.path.join(trained["workdir"], "phase1", "teacher"))
  _assert_same_variables(resumed, uninterrupted, "resumed teacher")


def test_second_run_on_a_finished_workdir_does_not_retrain(trained, source):
  workdir = trained["workdir"]
  exports = {p: _tree_hash(os.path.join(workdir, p))
             for p in ("phase1", "phase2")}
  with _capture_logs() as logs:
    results = train.run(_config(source), workdir)
  for phase in ("phase1", "phase2"):
    total = TOTAL_STEPS[phase]
    assert f"{phase}: resumed from step {total} of {total}" in logs.text
    assert not any(m.startswith(f"{phase} step ") for m in logs.messages)
    assert _tree_hash(os.path.join(workdir, phase)) == exports[phase]
  assert results == trained["results"]


def test_main_command_applies_overrides_in_eval_mode(trained, source,
                                                    tmp_path):
  """The absl command line: eval only, a benchmark config, overrides."""
  workdir = _copy_workdir(trained["workdir"], tmp_path)
  os.remove(os.path.join(workdir, "results.json"))
  proc = subprocess.run(
      _main_args(workdir, "--config.mode=eval",
                 f"--config.data.root={source}",
                 "--config.data.source=files",
                 "--config.data.image_size=(64, 32)",
                 "--config.data.p=4", "--config.data.k=2",
                 "--config.model.width=4",
                 "--config.model.head_planes=(4, 8, 16, 32)",
                 "--config.model.sr_features=8", "--config.model.sr_blocks=2",
                 "--config.eval.batch_size=24",
                 "--config.eval.ranked_list_queries=2"),
      cwd=REPO, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results == trained["results"]
  assert "| all |" in proc.stdout and "Rank-1" in proc.stdout
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["mode"] == "eval"
  assert saved["model"]["width"] == 4
  assert saved["model"]["head_planes"] == [4, 8, 16, 32]
  assert saved["data"]["name"] == "mlr_market1501"


# Bad command lines: (override, words the message must hold, whether the
# run gets as far as creating the workdir).
_BAD_COMMAND_LINES = {
    "unknown_key": ("--config.nonexistent=1", ["nonexistent"], False),
    "wrong_type": ("--config.optim.epochs=abc", ["epochs", "abc"], False),
    "preset_flag": ("--config.preset=released_code",
                    ["released_code", "configs/mlr_market1501.py:"], False),
    "unknown_mode": ("--config.mode=train", ["ConfigError", "mode", "train"],
                     False),
    "missing_root": ("--config.data.root=/nonexistent",
                     ["DatasetNotFoundError", "/nonexistent"], True),
}


@pytest.fixture(scope="module")
def bad_command_lines(tmp_path_factory):
  """Runs every bad command line at once (each is mostly start-up time)."""
  base = tmp_path_factory.mktemp("bad_cli")
  procs = {}
  for case, (flag, _, _) in _BAD_COMMAND_LINES.items():
    workdir = str(base / case)
    procs[case] = (workdir, subprocess.Popen(
        _main_args(workdir, flag), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = {}
  for case, (workdir, proc) in procs.items():
    _, stderr = proc.communicate(timeout=300)
    results[case] = (proc.returncode, stderr, workdir)
  return results


@pytest.mark.parametrize("case", sorted(_BAD_COMMAND_LINES))
def test_bad_command_line_one_clear_message(case, bad_command_lines):
  _, names, starts = _BAD_COMMAND_LINES[case]
  returncode, stderr, workdir = bad_command_lines[case]
  assert returncode == 1, stderr[-3000:]
  fatal = [l for l in stderr.splitlines() if l.startswith("FATAL ")]
  assert len(fatal) == 1, stderr[-3000:]
  for name in names:
    assert name in fatal[0], stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  assert os.path.exists(workdir) == starts


def test_unknown_mode(source, tmp_path):
  with pytest.raises(ValueError, match=r"mode='train'.*phase1"):
    train.run(_config(source, mode="train"), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_missing_dataset_root(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError, match="/nonexistent"):
    train.run(_config("/nonexistent"), str(tmp_path / "workdir"))


def test_phase2_without_teacher(source, tmp_path):
  workdir = str(tmp_path / "workdir")
  with pytest.raises(train.MissingTeacherError,
                     match=r"phase1/teacher does not exist"):
    train.run(_config(source, mode="phase2"), workdir)
  assert not os.path.exists(os.path.join(workdir, "phase2"))


def test_checkpoint_of_another_width(killed, source, tmp_path):
  workdir = _copy_workdir(killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  before = _tree_hash(checkpoints)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"width: saved 4, now 8"):
    train.run(_config(source, **_PHASE1_ONLY, **{"model.width": 8}), workdir)
  assert _tree_hash(checkpoints) == before


def test_non_finite_loss_stops_and_keeps_checkpoints(killed, source,
                                                     tmp_path):
  workdir = _copy_workdir(killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  before = _tree_hash(checkpoints)
  config = _config(source, **{**_PHASE1_ONLY,
                              "optim.groups.hrnet.lr": 1e6,
                              "train.checkpoint_every_steps": 100})
  with pytest.raises(train.NonFiniteLossError,
                     match=r"phase1: the loss became (nan|inf) at step "
                     r"(\d+)") as info:
    train.run(config, workdir)
  step = int(str(info.value).split(" at step ")[1].split()[0])
  assert KILL_AFTER_STEP < step <= TOTAL_STEPS["phase1"]
  assert f"last good step: {KILL_AFTER_STEP}" in str(info.value)
  assert _tree_hash(checkpoints) == before
  assert not os.path.exists(os.path.join(workdir, "phase1", "teacher"))
