"""Bad input through the main command and the driver: one clear error.

Each case exits with status 1 and one FATAL line naming the cause (through
`python -m pshrnet_jax.main`), or raises the one error type from
`pshrnet_jax.errors` that names it (through `driver.run`), and leaves what
the workdir held before as it was.
"""

import os
import subprocess

import numpy as np
import pytest

import tiny_setup as tiny
from pshrnet_jax import driver
from pshrnet_jax import errors
from pshrnet_jax.training import checkpoint


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
        tiny.main_args(workdir, flag), cwd=tiny.REPO,
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
