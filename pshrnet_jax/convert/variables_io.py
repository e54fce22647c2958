"""Flax variables on disk as Orbax folders: converted weights
(`--config.init_from`) and the exported teacher and student."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from data_pipelines import atomic
from pshrnet_jax.errors import UnreadableVariablesError

Variables = dict[str, Any]


def _local_checkpointer():
  """An Orbax checkpointer of this process alone: one process writes or
  reads these (a default one would wait at a barrier for every process)."""
  import orbax.checkpoint as ocp  # Deferred: import cost only where used.
  me = jax.process_index()
  return ocp.StandardCheckpointer(
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me}))


def save_variables(variables: Variables, directory: str | os.PathLike,
                   info: Mapping[str, Any] | None = None, *,
                   replace: bool = False,
                   info_file: str = "conversion.json") -> None:
  """Writes variables (and an optional JSON `info` as `info_file`) as an
  Orbax folder, atomically; `replace` swaps an existing `directory` whole.

  Raises:
    FileExistsError: `directory` holds something and `replace` is False.
  """
  with atomic.atomic_directory(directory, replace=replace) as tmp:
    # Closed on leaving the block (it waits for the write): an async
    # checkpointer collected while its thread runs logs a warning.
    with _local_checkpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, "variables"),
                        jax.tree.map(np.asarray, dict(variables)))
    if info is not None:
      with open(os.path.join(tmp, info_file), "w") as f:
        json.dump(info, f, indent=2)


def restore_variables(directory: str | os.PathLike) -> Variables:
  """The variables `save_variables` wrote to `directory`, as numpy arrays.

  Raises:
    FileNotFoundError: there are none.
    UnreadableVariablesError: they cannot be read (damaged, truncated).
  """
  path = os.path.join(os.path.abspath(os.fspath(directory)), "variables")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{directory}: no Orbax variables (expected {path}, "
                            "written by convert.save_variables)")
  try:
    with _local_checkpointer() as checkpointer:
      restored = checkpointer.restore(path)
  except Exception as e:  # pylint: disable=broad-except
    # Orbax and TensorStore raise many kinds for damaged files.
    raise UnreadableVariablesError(
        f"{directory}: the saved variables cannot be read ("
        f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        "); the files are damaged or incomplete. Export or convert them "
        "again.") from e
  return jax.tree.map(np.asarray, restored)


def fingerprint(variables: Mapping[str, Any]) -> str:
  """sha256 over every array's path, dtype, shape and bytes: names the
  weights a checkpoint's teacher, a log line or a features file came from."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(
      jax.device_get(dict(variables))):
    leaf = np.ascontiguousarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}"
                  .encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()[:32]
