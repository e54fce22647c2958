"""A trained model from a folder, rebuilt from what the folder records.

    from pshrnet_jax import load_model
    model, variables, info = load_model("workdirs/demo", which="teacher")

The folder is a workdir (its `config.json` names the export of the chosen
model: `phase2/student`, or `phase1/teacher` / `--config.teacher_dir`), an
export (variables and `model.json`, written by training), or a converted
checkpoint (variables and `conversion.json`, `python -m pshrnet_jax.convert`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import ml_collections

from pshrnet_jax import convert
from pshrnet_jax import workdir_layout
from pshrnet_jax.errors import ConfigError
from pshrnet_jax.inference.commands import WHICH
from pshrnet_jax.models import factory
from pshrnet_jax.models import inputs


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What a loaded model is and how to feed it.

  Attributes:
    kind: 'student' (SR + ReID, for LR queries) or 'teacher' (ReID only).
    path: the variables' folder.
    image_size: (height, width) of the network input.
    lr_interpolation: how images are resized to the network size.
    description: the recorded model description ({'model', 'model_kwargs'}).
    fingerprint: `convert.fingerprint` of the variables.
  """
  kind: str
  path: str
  image_size: tuple[int, int]
  lr_interpolation: str
  description: Mapping[str, Any]
  fingerprint: str


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path}: {e}") from e


def _export_of(workdir: str, which: str) -> str:
  config = ml_collections.ConfigDict(
      _read_json(os.path.join(workdir, workdir_layout.CONFIG_FILE)))
  directory = (workdir_layout.student_dir(workdir) if which == "student" else
               workdir_layout.teacher_dir(config, workdir))
  if not os.path.isdir(directory):
    raise ConfigError(f"{workdir} has no trained {which} ({directory} does "
                      "not exist); train it first, or pick --which="
                      f"{'teacher' if which == 'student' else 'student'}.")
  return directory


def _from_export(directory: str, which: str | None):
  for name in (workdir_layout.MODEL_FILE, "conversion.json"):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      break
  else:
    raise ConfigError(
        f"{directory} has neither {workdir_layout.MODEL_FILE} nor "
        "conversion.json, so the model cannot be rebuilt; training and "
        "`python -m pshrnet_jax.convert` write one beside the variables.")
  description = _read_json(path)
  model = factory.from_description(description, path)
  kind = description["kind"]
  if which is not None and kind != which:
    raise ConfigError(f"{directory} holds a {kind}, not a {which}.")
  variables = convert.restore_variables(directory)
  info = ModelInfo(kind, directory,
                   tuple(description.get("image_size", inputs.NETWORK_SIZE)),
                   description.get("lr_interpolation", "bilinear"),
                   description, convert.fingerprint(variables))
  return model, variables, info


def load_model(path: str | os.PathLike, which: str | None = None):
  """A trained student or teacher, ready for `model.apply`.

  Args:
    path: a workdir, an exported student/teacher, or a converted checkpoint.
    which: 'student' or 'teacher' for a workdir (default: student); for a
      model folder, the kind it must hold (default: whatever it holds).

  Returns:
    (model, variables, info): the Flax module, its {'params',
    'batch_stats'} on the default device, and a ModelInfo.

  Raises:
    FileNotFoundError: `path` does not exist.
    ConfigError: the folder lacks what rebuilding the model needs, or holds
      another kind of model.
  """
  path = os.path.abspath(os.fspath(path))
  if which is not None and which not in WHICH:
    raise ConfigError(f"which={which!r}; expected one of {WHICH}.")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no model folder at {path}")
  if os.path.isfile(os.path.join(path, workdir_layout.CONFIG_FILE)):
    which = which or "student"
    path = _export_of(path, which)
  model, variables, info = _from_export(path, which)
  return model, jax.device_put(variables), info
