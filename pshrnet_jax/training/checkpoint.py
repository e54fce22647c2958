"""One Orbax CheckpointManager per training phase, with guards.

A checkpoint holds `state` (params, batch_stats, optimiser state, step),
`data` (the input iterator's state: a resume sees the batches the
uninterrupted run would have) and `meta` (`loop.run_settings`). A resume
with other settings is refused before any array is read; an unreadable
checkpoint is moved aside (never deleted) and the previous one restored; a
failed save stops the run with CheckpointSaveError, naming the step that
failed (and on a full disk the disk and the space needed), with the partial
save removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging

from pshrnet_jax.errors import CheckpointMismatchError
from pshrnet_jax.errors import CheckpointSaveError


class PhaseCheckpointer:
  """Saves and restores one phase's training state under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._max_to_keep = max_to_keep
    self._manager = self._open()
    self._closed = False
    # The step (and size) of the save still writing in the background: its
    # failure surfaces at the next save or wait, and is named as its own.
    self._pending: tuple[int, int] | None = None

  def _open(self) -> ocp.CheckpointManager:
    return _manager(self.directory, max_to_keep=self._max_to_keep,
                    create=True)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: Mapping[str, Any],
           meta: Mapping[str, Any], *, force: bool = False) -> bool:
    """Saves asynchronously; returns whether a checkpoint was started.

    Raises:
      CheckpointSaveError: this save, or the previous asynchronous one,
        failed to write (the message names the folder, the step and the
        cause; a full disk, the space it needs).
    """
    self.wait_until_finished()  # The previous save's failure is its own.
    size = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
    try:
      started = save_hook(self._manager, step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(dict(data_state)),
          meta=ocp.args.JsonSave(dict(meta))), force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, size, e) from e
    if started:
      self._pending = (step, size)
    return started

  def _save_error(self, step: int, size: int,
                  cause: BaseException) -> Exception:
    if not _is_write_failure(cause):
      return cause  # A bug, not the disk: keep its own type and traceback.
    removed = self._remove_partial() if jax.process_index() == 0 else []
    try:  # Completely written checkpoints (Orbax renamed them).
      safe = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
    except OSError:
      safe = []
    kept = (f"the partial save was removed ({', '.join(removed)}); "
            if removed else "") + (
                f"the checkpoints already written ({safe}) are intact")
    if _is_disk_full(cause):
      disk = _mount_point(self.directory)
      try:
        free = _megabytes(shutil.disk_usage(self.directory).free)
      except OSError:
        free = "?"
      return CheckpointSaveError(
          f"No space left on {disk} (the disk of {self.directory}): the "
          f"checkpoint of step {step} needs about {_megabytes(size)}, "
          f"{free} are free now; {kept}. Free at least "
          f"{_megabytes(size)} there and run the same command to resume.")
    return CheckpointSaveError(
        f"Could not write the checkpoint of step {step} under "
        f"{self.directory}: {_first_line(cause)}. The run stopped; {kept}. "
        "Fix the folder (permissions, space) and run the same command to "
        "resume.")

  def _remove_partial(self) -> list[str]:
    """Removes the temporary folders of unfinished saves (Orbax writes a
    step to `<step>.orbax-checkpoint-tmp...` and renames it when complete)."""
    removed = []
    try:
      names = os.listdir(self.directory)
    except OSError:
      return removed
    for name in sorted(names):
      if _TMP_MARK in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        removed.append(name)
    return removed

  def restore_latest(self, abstract_state: Any,
                     expected_meta: Mapping[str, Any]
                     ) -> tuple[int, Any, dict[str, Any]] | None:
    """Restores the newest readable checkpoint; None if there is none.

    An unreadable one is moved aside (`<step>.unreadable-<n>`) with a
    warning, and the next older one is tried.

    Args:
      abstract_state: `jax.ShapeDtypeStruct`s (with shardings) of the state.
      expected_meta: this run's `run_settings`; a difference from the saved
        ones raises CheckpointMismatchError before any array is read.

    Returns:
      (step, state, data_state) or None.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        saved = _read_meta(self._manager, step)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      check_settings(saved, expected_meta, f"{self.directory}/{step}")
      try:
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      logging.info("Restored %s at step %d.", self.directory, step)
      return step, restored["state"], dict(restored["data"])
    return None

  def _set_aside(self, step: int, cause: BaseException) -> None:
    """Moves an unreadable checkpoint out of Orbax's way, deleting nothing."""
    source = os.path.join(self.directory, str(step))
    n = 0
    while os.path.exists(f"{source}.unreadable-{n}"):
      n += 1
    target = f"{source}.unreadable-{n}"
    self._manager.close()
    if jax.process_index() == 0:
      os.rename(source, target)
    self._manager = self._open()
    logging.warning(
        "The checkpoint %s cannot be read (%s: %s); it was moved to %s and "
        "the run continues from the previous checkpoint.", source,
        type(cause).__name__, str(cause)[:300], target)

  def wait_until_finished(self) -> None:
    """Waits for the save in the background (CheckpointSaveError names it)."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      step, size = self._pending or (self.latest_step() or 0, 0)
      raise self._save_error(step, size, e) from e
    self._pending = None

  def close(self) -> None:
    """Waits for pending saves (raising CheckpointSaveError), then closes."""
    if self._closed:
      return
    try:
      self.wait_until_finished()
    finally:
      self._closed = True
      self._manager.close()

  def abandon(self) -> None:
    """Closes without raising, after another error stopped the run."""
    if self._closed:
      return
    self._closed = True
    try:
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Closing %s after an error: %s", self.directory, e)


def save_hook(manager: ocp.CheckpointManager, step: int, **kwargs) -> bool:
  """`manager.save(step, **kwargs)`: where the tests inject a failing
  save (a full disk) into a real run, through this project's code."""
  return manager.save(step, **kwargs)


def _manager(directory: str, **options) -> ocp.CheckpointManager:
  # Folders are created in the caller's thread: one that cannot be written
  # then fails the save at once. Created in the background, Orbax's
  # signalling threads would wait for it (async_options.timeout_secs) and
  # hold the process after the error was reported.
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(
          async_options=ocp.AsyncOptions(
              create_directories_asynchronously=False), **options),
      item_names=("state", "data", "meta"))


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  return dict(manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def latest_settings(directory: str
                    ) -> tuple[int, dict[str, Any]] | None:
  """The newest checkpoint's step and settings, read without creating
  anything; None if there is none or it cannot be read (a resume then
  reports it)."""
  if not os.path.isdir(directory):
    return None
  try:
    manager = _manager(directory, create=False)
    try:
      step = manager.latest_step()
      return None if step is None else (step, _read_meta(manager, step))
    finally:
      manager.close()
  except Exception:  # pylint: disable=broad-except
    return None


_TMP_MARK = ".orbax-checkpoint-tmp"
# How TensorStore (Orbax's array writer) words OS errors: it raises them as
# ValueErrors with the OS's message.
_OS_ERROR_WORDS = ("No space left on device", "Disk quota exceeded",
                   "Permission denied", "Operation not permitted",
                   "Read-only file system")


def _causes(error: BaseException | None) -> list[BaseException]:
  seen = []
  while error is not None and all(error is not e for e in seen):
    seen.append(error)
    error = error.__cause__ or error.__context__
  return seen


def _is_write_failure(error: BaseException) -> bool:
  """An OSError (or one Orbax or TensorStore wrapped) from writing files."""
  return any(isinstance(e, OSError) or any(w in str(e) for w in
                                           _OS_ERROR_WORDS)
             for e in _causes(error))


def _is_disk_full(error: BaseException) -> bool:
  return any(getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
             or any(w in str(e) for w in _OS_ERROR_WORDS[:2])
             for e in _causes(error))


def _mount_point(path: str) -> str:
  path = os.path.realpath(path)
  while not os.path.ismount(path):
    path = os.path.dirname(path)
  return path


def _megabytes(size: int) -> str:
  return f"{size / 1e6:.1f} MB"


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return (text[0][:300] if text else type(error).__name__)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'model': {'width': 4}} -> {'model.width': 4}; lists stay values."""
  if not isinstance(tree, Mapping):
    return {prefix[:-1]: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}{key}."))
  return out


def check_settings(saved: Mapping[str, Any], expected: Mapping[str, Any],
                   where: str) -> None:
  """Raises CheckpointMismatchError naming every setting that differs from
  the `saved` ones, and the checkpoint `where` they were read."""
  # A JSON round trip makes tuples lists, as they come back from disk.
  old = _flatten(json.loads(json.dumps(dict(saved))))
  new = _flatten(json.loads(json.dumps(dict(expected))))
  diffs = [f"{key}: saved {old.get(key, '(absent)')!r}, now "
           f"{new.get(key, '(absent)')!r}"
           for key in sorted(set(old) | set(new))
           if old.get(key, "(absent)") != new.get(key, "(absent)")]
  if diffs:
    raise CheckpointMismatchError(
        f"The checkpoint {where} was written with other settings: "
        f"{'; '.join(diffs)}. Restore those settings (--config.<key>=...) "
        "to resume, or use a new --workdir; nothing was changed on disk.")


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` carrying `sharding`, for restoring."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)
