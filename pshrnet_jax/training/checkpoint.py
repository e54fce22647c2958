"""One Orbax CheckpointManager per training phase, with guards.

A checkpoint holds `state` (params, batch_stats, optimiser state, step),
`data` (the input iterator's state: a resume sees the batches the
uninterrupted run would have) and `meta` (`loop.run_settings`). A resume
with other settings is refused before any array is read; an unreadable
checkpoint is moved aside (never deleted) and the previous one restored; a
failed save stops the run with CheckpointSaveError.
"""

from __future__ import annotations

import json
import os
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
        failed to write (the message names the folder and the cause).
    """
    try:
      return self._manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=ocp.args.JsonSave(dict(data_state)),
              meta=ocp.args.JsonSave(dict(meta))),
          force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e

  def _save_error(self, step: int, cause: BaseException) -> Exception:
    if not _is_write_failure(cause):
      return cause  # A bug, not the disk: keep its own type and traceback.
    try:  # Completely written checkpoints (Orbax renamed them).
      safe = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
    except OSError:
      safe = []
    return CheckpointSaveError(
        f"Could not write the checkpoint of step {step} under "
        f"{self.directory}: {cause}. The run stopped; the checkpoints "
        f"already written ({safe}) are intact. Free disk "
        "space (or fix permissions) and run the same command to resume.")

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
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self.latest_step() or 0, e) from e

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


def _manager(directory: str, **options) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(**options),
      item_names=("state", "data", "meta"))


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  return dict(manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def latest_settings(directory: str) -> dict[str, Any] | None:
  """The newest checkpoint's settings, read without creating anything; None
  if there is none or it cannot be read (a resume then reports it)."""
  if not os.path.isdir(directory):
    return None
  try:
    manager = _manager(directory, create=False)
    try:
      step = manager.latest_step()
      return None if step is None else _read_meta(manager, step)
    finally:
      manager.close()
  except Exception:  # pylint: disable=broad-except
    return None


def _is_write_failure(error: BaseException) -> bool:
  """An OSError (or one Orbax wrapped) from writing files."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError):
      return True
    error = error.__cause__ or error.__context__
  return False


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
