"""Models built from a config: the one place that maps config.model to
module arguments, so training, evaluation and loading a trained model build
exactly the same networks."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from pshrnet_jax.errors import ConfigError
from pshrnet_jax.models.pshrnet import HRNetReID
from pshrnet_jax.models.pshrnet import PSHRNet

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(model_config: Any):
  """The jnp dtype of `config.model.compute_dtype`."""
  try:
    return COMPUTE_DTYPES[model_config.compute_dtype]
  except KeyError:
    raise ConfigError(
        f"--config.model.compute_dtype={model_config.compute_dtype!r}; "
        f"expected one of {sorted(COMPUTE_DTYPES)}") from None


def _reid_kwargs(m: Any, num_classes: int) -> dict[str, Any]:
  """HRNetReID's arguments, which the student's ReID part shares."""
  return dict(width=m.width, num_classes=num_classes, pooling=m.pooling,
              head_planes=tuple(m.head_planes), dropout_rate=m.dropout_rate,
              num_modules=tuple(m.hrnet_modules), num_blocks=m.hrnet_blocks,
              conv_impl=m.conv_impl, dtype=compute_dtype(m))


def build_teacher(model_config: Any, num_classes: int) -> HRNetReID:
  """HRNet-ReID (no SR): the phase-1 model and the frozen teacher.

  Args:
    model_config: `config.model`.
    num_classes: training identities M.
  """
  return HRNetReID(**_reid_kwargs(model_config, num_classes))


def build_student(model_config: Any, num_classes: int) -> PSHRNet:
  """PS-HRNet: the configured SR module followed by HRNet-ReID.

  Args:
    model_config: `config.model`.
    num_classes: training identities M.
  """
  m = model_config
  return PSHRNet(sr_module=m.sr_module, sr_blocks=m.sr_blocks,
                 sr_features=m.sr_features, **_reid_kwargs(m, num_classes))


def build(model_config: Any, num_classes: int, which: str):
  """`build_teacher` for 'teacher', `build_student` for 'student'."""
  if which == "teacher":
    return build_teacher(model_config, num_classes)
  if which == "student":
    return build_student(model_config, num_classes)
  raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")


# --- Rebuilding a model from what a folder records ---------------------------

_REBUILDABLE = {"HRNetReID": HRNetReID, "PSHRNet": PSHRNet}


def describe(module: HRNetReID | PSHRNet) -> dict[str, Any]:
  """{'model': class name, 'model_kwargs': JSON-able arguments}.

  Exports and converted checkpoints store this beside the variables, so a
  model is rebuilt from the folder (`from_description`), never from numbers
  a user repeats.
  """
  kwargs = {}
  for field in dataclasses.fields(module):
    if field.name in ("parent", "name"):
      continue
    value = getattr(module, field.name)
    if field.name == "dtype":
      value = jnp.dtype(value).name
    elif isinstance(value, tuple):
      value = list(value)
    kwargs[field.name] = value
  return {"model": type(module).__name__, "model_kwargs": kwargs}


def from_description(description: Mapping[str, Any], where: str):
  """The module `describe` recorded.

  Args:
    description: a dict with 'model' and 'model_kwargs'.
    where: the file it came from, for messages.

  Raises:
    ConfigError: not a ReID model this project builds, or arguments that
      the model does not take.
  """
  name = description.get("model")
  if name not in _REBUILDABLE:
    raise ConfigError(
        f"{where} describes a {name!r} model; only re-ID models "
        f"({sorted(_REBUILDABLE)}) can extract features.")
  kwargs = dict(description.get("model_kwargs") or {})
  if "dtype" in kwargs:
    kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  try:
    return _REBUILDABLE[name](**kwargs)
  except TypeError as e:
    raise ConfigError(f"{where}: the recorded arguments of {name} do not "
                      f"fit this version of the model ({e}).") from None
