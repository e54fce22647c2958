"""Flax variables on disk: Orbax checkpoints of {'params', 'batch_stats'}.

The format `scripts/convert_pytorch_hrnet.py` writes, `--config.init_from`
reads, and training uses for the exported teacher and student
(WORKDIR/phase1/teacher, WORKDIR/phase2/student). Re-exported by `convert`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import jax
import numpy as np

Variables = dict[str, Any]


def save_variables(variables: Variables, directory: str | os.PathLike,
                   info: Mapping[str, Any] | None = None) -> None:
  """Writes {'params', 'batch_stats'} as an Orbax checkpoint (+ info JSON).

  Everything is written to a temporary sibling first and renamed into place,
  so a failure leaves no partial `directory`.

  Args:
    variables: the Flax variables.
    directory: created; must not exist or be empty.
    info: optional JSON-able description, saved as `conversion.json`.
  """
  import orbax.checkpoint as ocp  # Deferred: import cost only where used.
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and (not os.path.isdir(directory)
                                    or os.listdir(directory)):
    raise FileExistsError(f"{directory} exists and is not an empty directory; "
                          "refusing to overwrite it")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(directory), dir=parent)
  try:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, "variables"),
                      jax.tree.map(np.asarray, dict(variables)))
    checkpointer.wait_until_finished()
    if info is not None:
      with open(os.path.join(tmp, "conversion.json"), "w") as f:
        json.dump(info, f, indent=2)
    if os.path.isdir(directory):
      os.rmdir(directory)
    os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def restore_variables(directory: str | os.PathLike) -> Variables:
  """Reads variables written by `save_variables` (as numpy arrays).

  Args:
    directory: the directory given to `save_variables`.

  Returns:
    {'params': ..., 'batch_stats': ...}.
  """
  import orbax.checkpoint as ocp
  path = os.path.join(os.path.abspath(os.fspath(directory)), "variables")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{directory}: no Orbax variables (expected {path}, "
                            "written by convert.save_variables)")
  restored = ocp.StandardCheckpointer().restore(path)
  return jax.tree.map(np.asarray, restored)
