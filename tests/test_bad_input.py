"""Bad input through the main command and the driver: one clear error.

Each case exits with status 1 and one FATAL line naming the cause (through
`python -m pshrnet_jax.main`), or raises the one error type from
`pshrnet_jax.errors` that names it (through `driver.run`), and leaves what
the workdir held before as it was (a hash of every file in it, before and
after). The table of command lines runs through tests/main_forks.py: each
case is a forked child running exactly what `python -m pshrnet_jax.main`
runs, without paying the imports 40 times; five cases also run as plain
subprocesses.
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tiny_setup as tiny
from pshrnet_jax import driver
from pshrnet_jax import errors
from pshrnet_jax.training import checkpoint


# Bad command lines: (overrides, words the message must hold, whether the
# run gets as far as creating the workdir).
_BAD_COMMAND_LINES = {
    "unknown_key": (["--config.nonexistent=1"], ["nonexistent"], False),
    "wrong_type": (["--config.optim.epochs=abc"], ["epochs", "abc"], False),
    "preset_flag": (["--config.preset=released_code"],
                    ["released_code", "configs/mlr_market1501.py:"], False),
    "unknown_mode": (["--config.mode=train"], ["ConfigError", "mode", "train"],
                     False),
    "missing_root": (["--config.data.root=/nonexistent",
                      "--config.init_from=none"],
                     ["DatasetNotFoundError", "/nonexistent"], True),
    # A benchmark config without ImageNet weights: refused before any work.
    "no_init_from": (["--config.data.root=/nonexistent"],
                     ["ConfigError", "phase 1", "HRNet-W32-C",
                      "--config.init_from is not set",
                      "--config.init_from=none"], False),
}


@pytest.fixture(scope="module")
def bad_command_lines(tmp_path_factory):
  """Runs every bad command line at once (each is mostly start-up time)."""
  base = tmp_path_factory.mktemp("bad_cli")
  procs = {}
  for case, (flags, _, _) in _BAD_COMMAND_LINES.items():
    workdir = str(base / case)
    procs[case] = (workdir, subprocess.Popen(
        tiny.main_args(workdir, *flags), cwd=tiny.REPO,
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


# The table: (workdir, override flags, words the FATAL line must hold).
# Workdirs: 'fresh' (does not exist yet), 'trained' / 'killed' (copies of the
# session runs), 'data_only' (a trained copy without its models: the data is
# built, nothing trained), 'busy' (another run holds it), 'file' (a file is
# in the way). Where a run must read the data before it can refuse, the
# workdir holds its build already: a fresh workdir gains the data build (a
# cache keyed by dataset and seed that the next run reuses).
_TABLE = {
    # Values out of range or of the wrong type.
    "mode": ("fresh", ["--config.mode=train"], ["mode", "train"]),
    "image_size_odd": ("fresh", ["--config.data.image_size=(100, 50)"],
                       ["image_size", "multiple of 32"]),
    "image_size_rank": ("fresh", ["--config.data.image_size=(64,)"],
                        ["image_size"]),
    "p_one": ("fresh", ["--config.data.p=1"], ["data.p", ">= 2"]),
    "k_zero": ("fresh", ["--config.data.k=0"], ["data.k", ">= 1"]),
    "width_zero": ("fresh", ["--config.model.width=0"], ["model.width"]),
    "pooling": ("fresh", ["--config.model.pooling=median"],
                ["model.pooling", "median", "avgmax"]),
    "sr_module": ("fresh", ["--config.model.sr_module=srgan"],
                  ["model.sr_module", "srgan"]),
    "dropout": ("fresh", ["--config.model.dropout_rate=1.5"],
                ["model.dropout_rate"]),
    "dtype": ("fresh", ["--config.model.compute_dtype=float16"],
              ["model.compute_dtype", "float16"]),
    "head_planes": ("fresh", ["--config.model.head_planes=(4, 8, 16)"],
                    ["model.head_planes", "4 integers"]),
    "hrnet_modules": ("fresh", ["--config.model.hrnet_modules=(1, 0, 1)"],
                      ["model.hrnet_modules"]),
    "ps_features": ("fresh", ["--config.loss.ps_features=('seq9',)"],
                    ["loss.ps_features", "seq9"]),
    "smoothing": ("fresh", ["--config.loss.label_smoothing=1.0"],
                  ["loss.label_smoothing"]),
    "margin": ("fresh", ["--config.loss.triplet_margin=-0.1"],
               ["loss.triplet_margin"]),
    "momentum": ("fresh", ["--config.optim.momentum=1.0"],
                 ["optim.momentum"]),
    "epochs_zero": ("fresh", ["--config.optim.epochs=0"], ["optim.epochs"]),
    "decay_zero": ("fresh", ["--config.optim.decay_epochs=0"],
                   ["optim.decay_epochs"]),
    "log_every": ("fresh", ["--config.train.log_every_steps=0"],
                  ["train.log_every_steps"]),
    "ap_convention": ("fresh", ["--config.eval.ap_convention=market"],
                      ["eval.ap_convention", "market"]),
    "trials": ("fresh", ["--config.eval.trials=0"], ["eval.trials"]),
    "interpolation": ("fresh", ["--config.data.lr_interpolation=lanczos"],
                      ["data.lr_interpolation", "lanczos"]),
    "source_kind": ("fresh", ["--config.data.source=lmdb"],
                    ["data.source", "lmdb"]),
    "student_init": ("fresh", ["--config.student_init=random"],
                     ["student_init", "random"]),
    "wrong_type": ("fresh", ["--config.optim.epochs=abc"], ["epochs", "abc"]),
    "unknown_key": ("fresh", ["--config.nonexistent=1"], ["nonexistent"]),
    "devices": ("fresh", ["--config.num_devices=16"],
                ["16 devices", "1 are visible"]),
    # Paths.
    "init_from_missing": ("fresh", ["--config.init_from=/nonexistent/w32"],
                          ["init_from", "/nonexistent/w32", "does not exist"]),
    "teacher_dir_missing": ("fresh", ["--config.teacher_dir=/nonexistent/t"],
                            ["teacher_dir", "/nonexistent/t"]),
    "root_missing": ("fresh", ["--config.data.root=/nonexistent/market"],
                     ["DatasetNotFoundError", "/nonexistent/market"]),
    "root_layout": ("fresh", ["--config.data.root=LAYOUT"],
                    ["DatasetLayoutError", "bounding_box_train"]),
    "corrupt_image": ("fresh", ["--config.data.root=CORRUPT"],
                      ["UnreadableImageError", "cannot be decoded"]),
    "empty_split": ("fresh", ["--config.data.root=EMPTY"],
                    ["EmptySplitError", "query"]),
    "workdir_is_a_file": ("file", [], ["--workdir", "cannot be used"]),
    "workdir_busy": ("busy", [], ["WorkdirBusyError", "in use"]),
    # The data, the workdir and the weights do not match.
    "p_too_large": ("data_only", ["--config.data.p=7"],
                    ["SamplerError", "P=7"]),
    "phase2_no_teacher": ("fresh", ["--config.mode=phase2"],
                          ["MissingTeacherError", "phase1/teacher"]),
    "eval_empty_workdir": ("data_only", ["--config.mode=eval"],
                           ["MissingTeacherError", "Nothing to evaluate"]),
    "other_benchmark": ("killed", ["--config.data.name=demo",
                                   "--config.mode=phase1"],
                        ["CheckpointMismatchError", "data.name",
                         "mlr_market1501", "demo"]),
    "other_width": ("killed", ["--config.model.width=8",
                               "--config.mode=phase1"],
                    ["CheckpointMismatchError", "model.width"]),
    "teacher_other_width": ("data_only", ["--config.mode=phase2",
                                      "--config.model.width=8",
                                      "--config.teacher_dir=TEACHER"],
                            ["ConfigError", "teacher", "shape"]),
    "init_from_other_width": ("data_only", ["--config.mode=phase1",
                                        "--config.model.width=8",
                                        "--config.init_from=TEACHER"],
                              ["ConversionError", "shape"]),
}


def _sources(tiny_source, base):
  """Broken copies of the tiny set: a wrong layout, a corrupt image, an
  empty query split."""
  layout = os.path.join(base, "layout")
  os.makedirs(os.path.join(layout, "images"))
  corrupt = os.path.join(base, "corrupt")
  shutil.copytree(tiny_source, corrupt)
  name = sorted(os.listdir(os.path.join(corrupt, "query")))[0]
  with open(os.path.join(corrupt, "query", name), "wb") as f:
    f.write(b"not a jpeg")
  empty = os.path.join(base, "empty")
  shutil.copytree(tiny_source, empty)
  for name in os.listdir(os.path.join(empty, "query")):
    os.remove(os.path.join(empty, "query", name))
  return {"LAYOUT": layout, "CORRUPT": corrupt, "EMPTY": empty}


@pytest.fixture(scope="module")
def table(tiny_source, tiny_trained, tiny_killed, tmp_path_factory):
  """Runs every case of _TABLE; returns {case: (code, stderr, before,
  after)} with the workdir's file hashes before and after."""
  base = str(tmp_path_factory.mktemp("table"))
  paths = _sources(tiny_source, base)
  paths["TEACHER"] = os.path.join(tiny_trained["workdir"], "phase1",
                                  "teacher")
  cases, workdirs = {}, {}
  for case, (kind, flags, _) in _TABLE.items():
    workdir = os.path.join(base, "workdirs", case)
    if kind in ("trained", "killed", "data_only"):
      shutil.copytree(tiny_killed if kind == "killed"
                      else tiny_trained["workdir"], workdir)
      if kind == "data_only":
        for name in os.listdir(workdir):
          if name != "data":
            path = os.path.join(workdir, name)
            (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
    elif kind in ("busy", "file"):
      os.makedirs(os.path.dirname(workdir), exist_ok=True)
      if kind == "file":
        with open(workdir, "w") as f:
          f.write("in the way")
        workdir = os.path.join(workdir, "sub")
      else:
        os.makedirs(workdir)
    workdirs[case] = workdir
    flags = [f.split("=", 1)[0] + "=" + paths.get(f.split("=", 1)[1],
                                                   f.split("=", 1)[1])
             for f in flags]
    # The tiny set-up, then the case's flags on top.
    overrides = tiny.main_overrides(tiny_source)
    cases[case] = tiny.main_args(workdir, *overrides, *flags)[3:]
  before = {c: _files_hash(w) for c, w in workdirs.items()}
  busy = os.open(workdirs["workdir_busy"], os.O_RDONLY)
  fcntl.flock(busy, fcntl.LOCK_EX)  # Another run holds it.
  try:
    with open(os.path.join(base, "cases.json"), "w") as f:
      json.dump(cases, f)
    subprocess.run([sys.executable, os.path.join(tiny.REPO, "tests",
                                                 "main_forks.py"),
                    os.path.join(base, "cases.json"),
                    os.path.join(base, "results.json")],
                   cwd=tiny.REPO, check=True, timeout=900)
  finally:
    os.close(busy)
  with open(os.path.join(base, "results.json")) as f:
    results = json.load(f)
  return {c: (r["code"], r["stderr"], before[c], _files_hash(workdirs[c]))
          for c, r in results.items()}


def _files_hash(path):
  """The files under `path` (none when it is absent: the lock may create an
  empty workdir; an empty folder holds nothing that could be lost)."""
  if os.path.isfile(path):
    return "a file"
  return tiny.tree_hash(path) if os.path.isdir(path) else tiny.tree_hash(
      "/nonexistent-empty")


def test_the_table_has_thirty_cases_and_more():
  assert len(_TABLE) >= 30


@pytest.mark.parametrize("case", sorted(_TABLE))
def test_bad_input_one_fatal_line_and_the_workdir_unchanged(case, table):
  code, stderr, before, after = table[case]
  assert code == 1, stderr[-3000:]
  fatal = [l for l in stderr.splitlines() if l.startswith("FATAL ")]
  assert len(fatal) == 1 and "Traceback" not in stderr, stderr[-3000:]
  for word in _TABLE[case][2]:
    assert word in fatal[0], (word, fatal[0])
  assert after == before


def test_unknown_mode(tiny_source, tmp_path):
  with pytest.raises(ValueError, match=r"mode='train'.*phase1"):
    driver.run(tiny.config_with(tiny_source, mode="train"), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_missing_dataset_root(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError, match="/nonexistent"):
    driver.run(tiny.config_with("/nonexistent"), str(tmp_path / "workdir"))


def test_phase2_without_teacher(tiny_source, tmp_path):
  workdir = str(tmp_path / "workdir")
  with pytest.raises(errors.MissingTeacherError,
                     match=r"phase1/teacher does not exist"):
    driver.run(tiny.config_with(tiny_source, mode="phase2"), workdir)
  assert not os.path.exists(os.path.join(workdir, "phase2"))


def test_checkpoint_of_another_width(tiny_killed, tiny_source, tmp_path):
  workdir = tiny.copy_workdir(tiny_killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  before = tiny.tree_hash(checkpoints)
  with pytest.raises(errors.CheckpointMismatchError,
                     match=r"width: saved 4, now 8"):
    driver.run(tiny.config_with(tiny_source, **tiny.PHASE1_ONLY,
                                **{"model.width": 8}), workdir)
  assert tiny.tree_hash(checkpoints) == before


def test_non_finite_state_stops_and_keeps_checkpoints(tiny_killed,
                                                      tiny_source, tmp_path,
                                                      monkeypatch):
  workdir = tiny.copy_workdir(tiny_killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  before = tiny.tree_hash(checkpoints)
  original_restore = checkpoint.PhaseCheckpointer.restore_latest

  def restore_poisoned(self, *args, **kwargs):
    # A parameter blown up to inf, as a diverging run leaves it: the same
    # compiled step then produces a non-finite loss.
    step, state, data_state = original_restore(self, *args, **kwargs)
    kernel = state.params["head"]["fc2"]["kernel"]
    params = dict(state.params, head=dict(
        state.params["head"], fc2=dict(state.params["head"]["fc2"],
                                       kernel=kernel * np.inf)))
    return step, state.replace(params=params), data_state

  monkeypatch.setattr(checkpoint.PhaseCheckpointer, "restore_latest",
                      restore_poisoned)
  config = tiny.config_with(tiny_source, **{**tiny.PHASE1_ONLY,
                                            "train.checkpoint_every_steps":
                                            100})
  with pytest.raises(errors.NonFiniteLossError,
                     match=r"phase1: the training state became non-finite "
                     r"by step (\d+) \(loss") as info:
    driver.run(config, workdir)
  step = int(str(info.value).split(" by step ")[1].split()[0])
  assert step == tiny.KILL_AFTER_STEP + 1  # Checked at every log step.
  assert (f"last finite checkpoint: step {tiny.KILL_AFTER_STEP}"
          in str(info.value))
  assert tiny.tree_hash(checkpoints) == before
  assert not os.path.exists(os.path.join(workdir, "phase1", "teacher"))
