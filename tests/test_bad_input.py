"""Bad input: one clear error, and the workdir left as it was.

A config value a run cannot use is refused by `config_checks.check_config`
with a ConfigError naming the flag and the value; bad data, workdirs and
weights are refused by `driver.run` with the one error type from
`pshrnet_jax.errors` that names the cause, leaving what the workdir held as
it was (a hash of every file in it, before and after). Every such type is
one of `errors.INPUT_ERRORS`, which the main command prints as its one FATAL
line; a few real command lines check that line, the exit status 1 and the
workdir, including the flag errors only the command line can make.
"""

import fcntl
import os
import shutil
import subprocess

import jax
import numpy as np
import pytest

import tiny_setup as tiny
from configs import mlr_market1501
from pshrnet_jax import config_checks
from pshrnet_jax import driver
from pshrnet_jax import errors
from pshrnet_jax import workdir_layout
from pshrnet_jax.training import checkpoint
from pshrnet_jax.training import sharding


def _assert_input_error(info, error_type, words):
  """The error is of `error_type`, printed as a FATAL line, naming `words`."""
  assert type(info.value) is error_type  # pylint: disable=unidiomatic-typecheck
  assert isinstance(info.value, errors.INPUT_ERRORS)
  for word in words:
    assert word in str(info.value), (word, str(info.value))


# Config values out of range or of the wrong kind: {case: (override,
# value, words the ConfigError must hold)}.
_BAD_VALUES = {
    "mode": ("mode", "train", ["mode", "train"]),
    "image_size_odd": ("data.image_size", (100, 50),
                       ["image_size", "multiple of 32"]),
    "image_size_rank": ("data.image_size", (64,), ["image_size"]),
    "p_one": ("data.p", 1, ["data.p", ">= 2"]),
    "k_zero": ("data.k", 0, ["data.k", ">= 1"]),
    "width_zero": ("model.width", 0, ["model.width"]),
    "pooling": ("model.pooling", "median",
                ["model.pooling", "median", "avgmax"]),
    "sr_module": ("model.sr_module", "srgan", ["model.sr_module", "srgan"]),
    "dropout": ("model.dropout_rate", 1.5, ["model.dropout_rate"]),
    "dtype": ("model.compute_dtype", "float16",
              ["model.compute_dtype", "float16"]),
    "head_planes": ("model.head_planes", (4, 8, 16),
                    ["model.head_planes", "4 integers"]),
    "hrnet_modules": ("model.hrnet_modules", (1, 0, 1),
                      ["model.hrnet_modules"]),
    "ps_features": ("loss.ps_features", ("seq9",),
                    ["loss.ps_features", "seq9"]),
    "smoothing": ("loss.label_smoothing", 1.0, ["loss.label_smoothing"]),
    "margin": ("loss.triplet_margin", -0.1, ["loss.triplet_margin"]),
    "momentum": ("optim.momentum", 1.0, ["optim.momentum"]),
    "epochs_zero": ("optim.epochs", 0, ["optim.epochs"]),
    "decay_zero": ("optim.decay_epochs", 0, ["optim.decay_epochs"]),
    "log_every": ("train.log_every_steps", 0, ["train.log_every_steps"]),
    "ap_convention": ("eval.ap_convention", "market",
                      ["eval.ap_convention", "market"]),
    "trials": ("eval.trials", 0, ["eval.trials"]),
    "interpolation": ("data.lr_interpolation", "lanczos",
                      ["data.lr_interpolation", "lanczos"]),
    "source_kind": ("data.source", "lmdb", ["data.source", "lmdb"]),
    "student_init": ("student_init", "random", ["student_init", "random"]),
    "init_from_missing": ("init_from", "/nonexistent/w32",
                          ["init_from", "/nonexistent/w32",
                           "does not exist"]),
    "teacher_dir_missing": ("teacher_dir", "/nonexistent/t",
                            ["teacher_dir", "/nonexistent/t"]),
    # The maths: what would train nothing, or blow up after the compile.
    "k_one_with_triplet": ("data.k", 1, ["data.k=1", ">= 2", "triplet"]),
    "lr_nan": ("optim.groups.hrnet.lr", float("nan"),
               ["optim.groups.hrnet.lr=nan", "finite"]),
    "lr_inf": ("optim.groups.sr.lr", float("inf"),
               ["optim.groups.sr.lr=inf", "finite"]),
    "lr_huge": ("optim.groups.hrnet.lr", 1e30,
                ["optim.groups.hrnet.lr=1e+30", "<= 10"]),
    "weight_inf": ("loss.ce_weight", float("inf"),
                   ["loss.ce_weight=inf", "finite"]),
    "ps_features_repeated": ("loss.ps_features", ("seq1", "seq5", "seq1"),
                             ["loss.ps_features", "['seq1'] named more than "
                              "once"]),
    "build_dir_is_a_file": ("data.build_dir", os.path.join(tiny.REPO,
                                                           "README.md"),
                            ["data.build_dir", "README.md", "not a file"]),
}


@pytest.mark.parametrize("case", sorted(_BAD_VALUES))
def test_check_config_names_the_bad_value(case):
  flag, value, words = _BAD_VALUES[case]
  config = tiny.config_with("/data", **{flag: value})
  with pytest.raises(errors.ConfigError) as info:
    config_checks.check_config(config)
  _assert_input_error(info, errors.ConfigError, words)


def test_k_one_is_accepted_without_the_triplet_loss():
  config_checks.check_config(tiny.config_with(
      "/data", **{"data.k": 1, "loss.triplet_weight": 0.0}))


def test_a_benchmark_config_without_imagenet_weights_is_refused():
  config = mlr_market1501.get_config()
  config.data.root = "/nonexistent"
  with pytest.raises(errors.ConfigError) as info:
    config_checks.check_config(config)
  _assert_input_error(info, errors.ConfigError, [
      "phase 1", "HRNet-W32-C", "--config.init_from is not set",
      "--config.init_from=none"])


def test_more_devices_than_visible():
  with pytest.raises(errors.ConfigError) as info:
    sharding.make_data_mesh(16)
  _assert_input_error(info, errors.ConfigError, [
      "16 devices", f"{len(jax.devices())} are visible"])


def test_a_bad_config_is_refused_before_the_workdir_is_touched(tiny_source,
                                                               tmp_path):
  with pytest.raises(errors.ConfigError, match=r"mode='train'.*phase1"):
    driver.run(tiny.config_with(tiny_source, mode="train"), str(tmp_path))
  assert not os.listdir(tmp_path)


def _files_hash(path):
  """The files under `path` (none when it is absent: the lock may create an
  empty workdir; an empty folder holds nothing that could be lost)."""
  if os.path.isfile(path):
    return "a file"
  return tiny.tree_hash(path) if os.path.isdir(path) else tiny.tree_hash(
      "/nonexistent-empty")


def _broken_source(tiny_source, base, kind):
  """A copy of the tiny set with a wrong layout, a corrupt image or an
  empty query split."""
  path = os.path.join(base, kind)
  if kind == "LAYOUT":
    os.makedirs(os.path.join(path, "images"))
    return path
  shutil.copytree(tiny_source, path)
  names = sorted(os.listdir(os.path.join(path, "query")))
  if kind == "CORRUPT":
    with open(os.path.join(path, "query", names[0]), "wb") as f:
      f.write(b"not a jpeg")
  else:
    for name in names:
      os.remove(os.path.join(path, "query", name))
  return path


# Bad data, workdirs and weights through driver.run: (workdir, overrides,
# error type, words its message must hold). Workdirs: 'fresh' (does not
# exist yet), 'killed' (a copy of the killed phase-1 run), 'data_only' (a
# trained copy without its models: the data is built, nothing trained),
# 'busy' (another run holds it), 'file' (a file is in the way). Paths in
# capitals are made by the test.
_BAD_RUNS = {
    "root_missing": ("fresh", {"data.root": "/nonexistent/market"},
                     errors.DatasetNotFoundError, ["/nonexistent/market"]),
    "root_layout": ("fresh", {"data.root": "LAYOUT"},
                    errors.DatasetLayoutError, ["bounding_box_train"]),
    "corrupt_image": ("fresh", {"data.root": "CORRUPT"},
                      errors.UnreadableImageError, ["cannot be decoded"]),
    "empty_split": ("fresh", {"data.root": "EMPTY"}, errors.EmptySplitError,
                    ["query"]),
    "workdir_is_a_file": ("file", {}, errors.ConfigError,
                          ["--workdir", "cannot be used"]),
    "workdir_busy": ("busy", {}, errors.WorkdirBusyError, ["in use"]),
    "p_too_large": ("data_only", {"data.p": 7}, errors.SamplerError,
                    ["P=7"]),
    "phase2_no_teacher": ("fresh", {"mode": "phase2"},
                          errors.MissingTeacherError,
                          ["phase1/teacher does not exist"]),
    "eval_empty_workdir": ("data_only", {"mode": "eval"},
                           errors.MissingTeacherError,
                           ["Nothing to evaluate"]),
    "other_benchmark": ("killed", {"data.name": "demo", "mode": "phase1"},
                        errors.CheckpointMismatchError,
                        ["data.name", "mlr_market1501", "demo"]),
    "other_width": ("killed", {"model.width": 8, "mode": "phase1"},
                    errors.CheckpointMismatchError,
                    ["model.width", "width: saved 4, now 8"]),
    "teacher_other_width": ("data_only", {"mode": "phase2", "model.width": 8,
                                          "teacher_dir": "TEACHER"},
                            errors.ConfigError, ["teacher", "shape"]),
    "init_from_other_width": ("data_only", {"mode": "phase1",
                                            "model.width": 8,
                                            "init_from": "TEACHER"},
                              errors.ConversionError, ["shape"]),
    "workdir_of_someone_else": ("foreign", {}, errors.ConfigError,
                                ["not a workdir of this project",
                                 "config.json", "photo.jpg"]),
    "resume_fewer_steps": ("trained", {"mode": "phase1",
                                       "train.phase1_epochs": 1},
                           errors.CheckpointMismatchError,
                           ["checkpoints/8 is at step 8",
                            "--config.train.phase1_epochs=1 asks for 4 "
                            "steps", "2 epochs or more"]),
    "teacher_damaged": ("data_only", {"mode": "phase2",
                                      "teacher_dir": "DAMAGED_TEACHER"},
                        errors.UnreadableVariablesError,
                        ["DAMAGED_TEACHER", "cannot be read"]),
}


def _workdir(kind, base, tiny_trained, tiny_killed):
  """Workdirs: see _BAD_RUNS; 'trained' is a copy of the finished run,
  'foreign' a folder of someone's files (a config.json of their own)."""
  workdir = os.path.join(base, "workdir")
  if kind in ("killed", "data_only", "trained"):
    shutil.copytree(tiny_killed if kind == "killed"
                    else tiny_trained["workdir"], workdir)
    if kind == "data_only":
      for name in os.listdir(workdir):
        if name not in ("data", workdir_layout.MARKER_FILE):
          path = os.path.join(workdir, name)
          (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
  elif kind == "file":
    with open(workdir, "w") as f:
      f.write("in the way")
    workdir = os.path.join(workdir, "sub")
  elif kind == "busy":
    os.makedirs(workdir)
  elif kind == "foreign":
    os.makedirs(workdir)
    for name, text in (("config.json", '{"camera": "mine"}'),
                       ("photo.jpg", "not a workdir")):
      with open(os.path.join(workdir, name), "w") as f:
        f.write(text)
  return workdir


@pytest.mark.parametrize("case", sorted(_BAD_RUNS))
def test_bad_run_one_clear_error_and_the_workdir_unchanged(
    case, tiny_source, tiny_trained, tiny_killed, tmp_path):
  kind, overrides, error_type, words = _BAD_RUNS[case]
  paths = {"TEACHER": os.path.join(tiny_trained["workdir"], "phase1",
                                   "teacher")}
  for name in ("LAYOUT", "CORRUPT", "EMPTY"):
    if name in overrides.values():
      paths[name] = _broken_source(tiny_source, str(tmp_path), name)
  if "DAMAGED_TEACHER" in overrides.values():
    paths["DAMAGED_TEACHER"] = tiny.damaged_copy(
        paths["TEACHER"], os.path.join(str(tmp_path), "DAMAGED_TEACHER"))
  overrides = {k: paths.get(v, v) if isinstance(v, str) else v
               for k, v in overrides.items()}
  workdir = _workdir(kind, str(tmp_path), tiny_trained, tiny_killed)
  before = _files_hash(workdir)
  busy = os.open(workdir, os.O_RDONLY) if kind == "busy" else None
  if busy is not None:
    fcntl.flock(busy, fcntl.LOCK_EX)  # Another run holds it.
  try:
    with pytest.raises(error_type) as info:
      driver.run(tiny.config_with(tiny_source, **overrides), workdir)
  finally:
    if busy is not None:
      os.close(busy)
  _assert_input_error(info, error_type, words)
  assert _files_hash(workdir) == before


# Real command lines: (flags, words the FATAL line must hold, whether the
# run gets as far as creating the workdir). The flag errors only the
# command line can make, a ConfigError and a data error.
_COMMAND_LINES = {
    "unknown_key": (["--config.nonexistent=1"], ["nonexistent"], False),
    "wrong_type": (["--config.optim.epochs=abc"], ["epochs", "abc"], False),
    "preset_flag": (["--config.preset=released_code"],
                    ["released_code", "configs/mlr_market1501.py:"], False),
    "unknown_mode": (["--config.mode=train"], ["ConfigError", "mode", "train"],
                     False),
    "missing_root": (["--config.data.root=/nonexistent",
                      "--config.init_from=none"],
                     ["DatasetNotFoundError", "/nonexistent"], True),
    # ml_collections would join the two into ('seq1', 'seq4').
    "tuple_flag_twice": (["--config.loss.ps_features=('seq1',)",
                          "--config.loss.ps_features=('seq4',)"],
                         ["--config.loss.ps_features was given 2 times",
                          "('seq1', 'seq4')"], False),
}


@pytest.fixture(scope="module")
def command_lines(tmp_path_factory):
  """Runs every bad command line at once (each is mostly start-up time)."""
  base = tmp_path_factory.mktemp("bad_cli")
  procs = {}
  for case, (flags, _, _) in _COMMAND_LINES.items():
    workdir = str(base / case)
    procs[case] = (workdir, subprocess.Popen(
        tiny.main_args(workdir, *flags), cwd=tiny.REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = {}
  for case, (workdir, proc) in procs.items():
    _, stderr = proc.communicate(timeout=300)
    results[case] = (proc.returncode, stderr, workdir)
  return results


@pytest.mark.parametrize("case", sorted(_COMMAND_LINES))
def test_bad_command_line_one_fatal_line(case, command_lines):
  _, words, starts = _COMMAND_LINES[case]
  returncode, stderr, workdir = command_lines[case]
  assert returncode == 1, stderr[-3000:]
  fatal = [l for l in stderr.splitlines() if l.startswith("FATAL ")]
  assert len(fatal) == 1 and "Traceback" not in stderr, stderr[-3000:]
  for word in words:
    assert word in fatal[0], (word, fatal[0])
  # Created (empty: only the lock was taken) only by a run that got that far.
  assert os.path.exists(workdir) == starts
  assert not starts or not os.listdir(workdir)


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
