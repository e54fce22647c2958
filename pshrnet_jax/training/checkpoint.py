"""One Orbax CheckpointManager per training phase.

A checkpoint holds three items: `state` (params, batch_stats, optimiser
state, step), `data` (the input iterator's JSON state, so a resumed run sees
exactly the batches the uninterrupted run would have seen) and `meta` (the
model shape and data facts the state depends on). Orbax writes each step to a
temporary folder and renames it when complete, so a run killed mid-save
leaves the previous checkpoints intact. Nothing here unpickles anything.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging

from pshrnet_jax.errors import CheckpointMismatchError


class PhaseCheckpointer:
  """Saves and restores one phase's training state under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int = 2,
               save_interval_steps: int = 1):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
        create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: Mapping[str, Any],
           meta: Mapping[str, Any], *, force: bool = False) -> bool:
    """Saves asynchronously; returns whether a checkpoint was started."""
    return self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(dict(data_state)),
            meta=ocp.args.JsonSave(dict(meta))),
        force=force)

  def read_meta(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore(self, step: int, abstract_state: Any,
              expected_meta: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Restores `state` and the data-iterator state of checkpoint `step`.

    Args:
      step: the checkpoint step.
      abstract_state: a pytree of `jax.ShapeDtypeStruct` (with shardings)
        shaped like the state to restore.
      expected_meta: facts the state depends on (width, number of
        identities, ...); any difference to the saved ones is an error that
        names them, raised before any array is read.

    Returns:
      (state, data_state).
    """
    saved = self.read_meta(step)
    diffs = [f"{key}: saved {saved.get(key)!r}, now {value!r}"
             for key, value in expected_meta.items()
             if _jsonable(saved.get(key)) != _jsonable(value)]
    if diffs:
      raise CheckpointMismatchError(
          f"The checkpoint {self.directory}/{step} was written for another "
          f"configuration ({'; '.join(diffs)}). Use a new --workdir, or "
          "restore the original settings; nothing was changed on disk.")
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
    logging.info("Restored %s at step %d.", self.directory, step)
    return restored["state"], dict(restored["data"])

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _jsonable(value: Any) -> Any:
  """Tuples and lists compare equal after a JSON round trip."""
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  return value


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` carrying `sharding`, for restoring."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)
