"""What a run guarantees when things go wrong, in this process.

On the tiny set-up (tests/tiny_setup.py), reusing the session runs of
conftest.py: a corrupt latest checkpoint, a disk that fills up during a save,
a resume with changed settings (refused, naming the key and both values) or
harmless ones (allowed), a teacher replaced between phases, a non-finite
state, and the learning rate the log reports across warm-up and a decay.
Kills of real processes and multi-process runs are in test_kill_resume.py
and test_multiprocess.py.
"""

import dataclasses
import errno
import os
import threading
import time

import jax
import numpy as np
import pytest

import tiny_setup as tiny
from pshrnet_jax import convert
from pshrnet_jax import driver
from pshrnet_jax import errors
from pshrnet_jax.training import checkpoint
from pshrnet_jax.training import loop


def _teacher(workdir):
  return convert.restore_variables(os.path.join(workdir, "phase1", "teacher"))


def _assert_same(a, b, what):
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=what)


def _corrupt(step_dir: str) -> list[str]:
  """Truncates every array data file of a checkpoint's state item."""
  hit = []
  for root, _, names in os.walk(os.path.join(step_dir, "state")):
    for name in names:
      path = os.path.join(root, name)
      if "/d/" in path + "/" and os.path.getsize(path) > 16:
        with open(path, "r+b") as f:
          f.truncate(8)
        hit.append(path)
  return hit


def test_corrupt_latest_checkpoint_resumes_from_the_previous(
    tiny_killed, tiny_trained, tiny_source, tmp_path):
  workdir = tiny.copy_workdir(tiny_killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  assert _corrupt(os.path.join(checkpoints, "4"))
  with tiny.capture_logs() as logs:
    driver.run(tiny.config_with(tiny_source, **tiny.PHASE1_ONLY), workdir)
  assert "checkpoints/4 cannot be read" in logs.text
  assert "phase1: resumed from step 2 of 8." in logs.text
  # Nothing deleted: the unreadable checkpoint was moved aside, whole.
  assert os.path.isdir(os.path.join(checkpoints, "4.unreadable-0", "state"))
  # And the run ends where an uninterrupted one does.
  _assert_same(_teacher(workdir), _teacher(tiny_trained["workdir"]),
               "teacher resumed from step 2")


def _non_daemon_threads():
  return {t for t in threading.enumerate()
          if t is not threading.main_thread() and not t.daemon
          and t.is_alive()}


def _threads_left(before, wait_s=5.0):
  """Non-daemon threads started since `before` still alive after `wait_s`
  (each would keep the process from exiting)."""
  deadline = time.monotonic() + wait_s
  while _non_daemon_threads() - before and time.monotonic() < deadline:
    time.sleep(0.1)
  return sorted(t.name for t in _non_daemon_threads() - before)


def test_a_full_disk_is_one_error_and_the_run_resumes_after(
    tiny_killed, tiny_trained, tiny_source, tmp_path, monkeypatch):
  workdir = tiny.copy_workdir(tiny_killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  real_save = checkpoint.save_hook

  def disk_full(manager, step, **kwargs):
    if step < 6:
      return real_save(manager, step, **kwargs)
    # What TensorStore raises half-way through writing a step.
    partial = os.path.join(checkpoints, f"{step}.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(partial, "state"))
    with open(os.path.join(partial, "state", "half"), "wb") as f:
      f.write(b"\0" * 1000)
    raise ValueError(
        f'RESOURCE_EXHAUSTED: Error writing local file "{partial}/state": '
        "Failed to write 469211 bytes to file 11: No space left on device "
        "[os_error_code='28']")

  monkeypatch.setattr(checkpoint, "save_hook", disk_full)
  before = _non_daemon_threads()
  with pytest.raises(errors.CheckpointSaveError) as info:
    driver.run(tiny.config_with(tiny_source, **tiny.PHASE1_ONLY), workdir)
  message = str(info.value)
  disk = checkpoint._mount_point(checkpoints)  # pylint: disable=protected-access
  state_mb = sum(x.nbytes for x in jax.tree.leaves(
      _teacher(tiny_trained["workdir"]))) / 1e6
  assert message.startswith(f"No space left on {disk} (the disk of "
                            f"{checkpoints}): the checkpoint of step 6 needs "
                            "about "), message
  needed = float(message.split("needs about ")[1].split(" MB")[0])
  assert state_mb <= needed <= 4 * state_mb  # Parameters + optimiser state.
  assert ("the partial save was removed (6.orbax-checkpoint-tmp); the "
          "checkpoints already written ([2, 4]) are intact") in message
  assert sorted(os.listdir(checkpoints)) == ["2", "4"]
  assert not _threads_left(before)
  assert not os.path.exists(os.path.join(workdir, "phase1", "teacher"))
  # Space freed: the same command resumes from step 4 and ends as an
  # uninterrupted run.
  monkeypatch.undo()
  with tiny.capture_logs() as logs:
    driver.run(tiny.config_with(tiny_source, **tiny.PHASE1_ONLY), workdir)
  assert "phase1: resumed from step 4 of 8." in logs.text
  _assert_same(_teacher(workdir), _teacher(tiny_trained["workdir"]),
               "teacher resumed after a full disk")


def test_an_unwritable_checkpoint_folder_stops_at_once_and_leaves_no_thread(
    tiny_killed, tiny_source, tmp_path, monkeypatch):
  # The folder becomes unusable just before the save of step 6 (a file in
  # its place: unwritable for root too). Orbax creating step folders in the
  # background left threads waiting for it, and the process with them.
  workdir = tiny.copy_workdir(tiny_killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  real_save = checkpoint.save_hook

  def folder_gone(manager, step, **kwargs):
    if step == 6:
      os.rename(checkpoints, checkpoints + ".aside")
      with open(checkpoints, "w") as f:
        f.write("in the way")
    return real_save(manager, step, **kwargs)

  monkeypatch.setattr(checkpoint, "save_hook", folder_gone)
  before = _non_daemon_threads()
  with pytest.raises(errors.CheckpointSaveError,
                     match=r"^Could not write the checkpoint of step 6 under "
                     r".*Not a directory"):
    driver.run(tiny.config_with(tiny_source, **tiny.PHASE1_ONLY), workdir)
  assert not _threads_left(before)
  os.remove(checkpoints)
  os.rename(checkpoints + ".aside", checkpoints)
  assert sorted(os.listdir(checkpoints)) == ["2", "4"]


class _FailingManager:
  """A CheckpointManager whose background write of the first save fails:
  the error surfaces at the next save."""

  def __init__(self):
    self.saves = 0

  def save(self, step, **kwargs):
    del step, kwargs
    self.saves += 1
    return True

  def wait_until_finished(self):
    if self.saves:
      raise OSError(errno.EACCES, "Permission denied", "checkpoints/6")

  def latest_step(self):
    return 4


def test_a_failed_background_save_is_named_by_its_own_step(tmp_path):
  ckpt = checkpoint.PhaseCheckpointer(str(tmp_path / "checkpoints"))
  ckpt._manager.close()  # pylint: disable=protected-access
  ckpt._manager = _FailingManager()  # pylint: disable=protected-access
  state = {"w": np.zeros(250, np.float32)}
  assert ckpt.save(6, state, {}, {})
  with pytest.raises(errors.CheckpointSaveError,
                     match=r"checkpoint of step 6 under .*Permission denied"):
    ckpt.save(8, state, {}, {})


def test_resume_refuses_changed_settings_and_allows_harmless_ones(
    tiny_killed, tiny_trained, tiny_source, tmp_path):
  workdir = tiny.copy_workdir(tiny_killed, tmp_path)
  before = tiny.tree_hash(workdir)
  for overrides, message in (
      ({"loss.triplet_margin": 0.3},
       "loss.triplet_margin: saved 0.1, now 0.3"),
      ({"optim.groups.hrnet.lr": 0.01},
       "optim.groups.hrnet.lr: saved 0.05, now 0.01"),
      ({"seed": 1}, "seed: saved 0, now 1"),
      ({"data.pad": 2}, "data.pad: saved 10, now 2"),
  ):
    with pytest.raises(errors.CheckpointMismatchError, match=message):
      driver.run(tiny.config_with(tiny_source, **tiny.PHASE1_ONLY,
                                  **overrides), workdir)
    assert tiny.tree_hash(workdir) == before, overrides
  # Logging, checkpoint frequency and retention may change.
  with tiny.capture_logs() as logs:
    driver.run(tiny.config_with(tiny_source, **{
        **tiny.PHASE1_ONLY, "train.log_every_steps": 2,
        "train.checkpoint_every_steps": 3,
        "train.max_checkpoints_to_keep": 4}), workdir)
  assert "phase1: resumed from step 4 of 8." in logs.text
  _assert_same(_teacher(workdir), _teacher(tiny_trained["workdir"]),
               "teacher after a harmless change")


def test_phase2_resume_refuses_another_teacher(tiny_trained, tiny_source,
                                               tmp_path):
  workdir = tiny.copy_workdir(tiny_trained["workdir"], tmp_path)
  teacher_dir = os.path.join(workdir, "phase1", "teacher")
  teacher = _teacher(workdir)
  teacher["params"]["head"]["fc2"]["bias"] = (
      teacher["params"]["head"]["fc2"]["bias"] + 1.0)
  convert.save_variables(teacher, teacher_dir, replace=True)
  student = os.path.join(workdir, "phase2")
  before = tiny.tree_hash(student)
  with pytest.raises(errors.CheckpointMismatchError,
                     match=r"teacher_fingerprint: saved '[0-9a-f]{32}', "
                     r"now '[0-9a-f]{32}'"):
    driver.run(tiny.config_with(tiny_source, mode="phase2"), workdir)
  assert tiny.tree_hash(student) == before


@pytest.mark.parametrize("bad,named", [
    ({"loss": float("nan")}, "loss"),
    ({"grad_norm": float("inf")}, "grad_norm"),
    ({"params_finite": 0.0}, "updated parameters")])
def test_a_non_finite_update_stops_the_run_and_is_never_saved(
    bad, named, tiny_killed, tiny_source, tmp_path, monkeypatch):
  # The resumed run's first step (step 5) reports the non-finite metric.
  workdir = tiny.copy_workdir(tiny_killed, tmp_path)
  checkpoints = os.path.join(workdir, "phase1", "checkpoints")
  before = tiny.tree_hash(checkpoints)
  build_step = loop.build_step

  def build_bad_step(*args, **kwargs):
    built = build_step(*args, **kwargs)

    def bad_step(*step_args):
      state, metrics = built.step(*step_args)
      return state, dict(metrics, **bad)
    return dataclasses.replace(built, step=bad_step)

  monkeypatch.setattr(loop, "build_step", build_bad_step)
  config = tiny.config_with(tiny_source, **{
      **tiny.PHASE1_ONLY, "train.checkpoint_every_steps": 1})
  step = tiny.KILL_AFTER_STEP + 1
  with pytest.raises(errors.NonFiniteLossError,
                     match=rf"phase1: the training state became non-finite "
                     rf"by step {step} \({named}[;,].*last finite "
                     rf"checkpoint: step {tiny.KILL_AFTER_STEP}\)"):
    driver.run(config, workdir)
  assert tiny.tree_hash(checkpoints) == before
  assert not os.path.exists(os.path.join(workdir, "phase1", "teacher"))


def test_logged_learning_rate_is_the_one_the_update_used(tiny_source,
                                                         tmp_path):
  # Epoch 0 warms up at 1e-3, then 0.05 decays x0.1 every epoch:
  # the update of step s (1-based, as logged) uses the LR of epoch
  # (s - 1) // 4.
  workdir = str(tmp_path / "workdir")
  driver.run(tiny.config_with(tiny_source, **{
      "mode": "phase1", "train.phase1_epochs": 3, "optim.warmup_epochs": 1,
      "optim.warmup_lr": 1e-3, "optim.decay_epochs": 1}), workdir)
  logged = dict(tiny.read_scalars(
      os.path.join(workdir, "tensorboard", "phase1"))["lr/hrnet"])
  expected = {s: (1e-3 if s <= 4 else tiny.HRNET_LR * 0.1 ** ((s - 1) // 4))
              for s in range(1, 13)}
  assert sorted(logged) == sorted(expected)
  for s, lr in expected.items():
    assert logged[s] == pytest.approx(lr, rel=1e-6), s
