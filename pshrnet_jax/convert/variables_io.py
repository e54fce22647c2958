"""Flax variables on disk: Orbax checkpoints of {'params', 'batch_stats'}.

The format `scripts/convert_pytorch_hrnet.py` writes, `--config.init_from`
reads, and training uses for the exported teacher and student
(WORKDIR/phase1/teacher, WORKDIR/phase2/student).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from data_pipelines import atomic

Variables = dict[str, Any]


def _local_checkpointer():
  """An Orbax checkpointer of this process alone.

  Variables here are host numpy arrays that one process writes or reads on
  its own (the export of a multi-process run is written by process 0); a
  default checkpointer would wait at a barrier for every process.
  """
  import orbax.checkpoint as ocp  # Deferred: import cost only where used.
  me = jax.process_index()
  return ocp.StandardCheckpointer(
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me}))


def save_variables(variables: Variables, directory: str | os.PathLike,
                   info: Mapping[str, Any] | None = None, *,
                   replace: bool = False,
                   info_file: str = "conversion.json") -> None:
  """Writes {'params', 'batch_stats'} as an Orbax checkpoint (+ info JSON).

  Everything is written to a temporary sibling first and renamed into place,
  so a failure leaves no partial `directory`.

  Args:
    variables: the Flax variables.
    directory: created; must not exist or be empty, unless `replace`.
    info: optional JSON-able description, saved as `info_file`.
    replace: swap an existing `directory` for the new variables as a whole.
    info_file: the description's file name (`conversion.json` for converted
      checkpoints, `model.json` for exported teachers and students).

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
  """Reads variables written by `save_variables` (as numpy arrays).

  Args:
    directory: the directory given to `save_variables`.

  Returns:
    {'params': ..., 'batch_stats': ...}.
  """
  path = os.path.join(os.path.abspath(os.fspath(directory)), "variables")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{directory}: no Orbax variables (expected {path}, "
                            "written by convert.save_variables)")
  with _local_checkpointer() as checkpointer:
    restored = checkpointer.restore(path)
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
