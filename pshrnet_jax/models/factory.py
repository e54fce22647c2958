"""Models built from a config: the one place that maps config.model to
module arguments, so training, evaluation and loading a trained model build
exactly the same networks.

    config.model.backbone   'hrnet' (paper) | 'resnet50' (Table IV's extractor)
    config.model.head       'reid' (SPEC 1.3) | 'imagenet' (HRNet-W32-C's own
                            representation head, Table VI's reference row)
    config.model.sr_module  'vdsr_ca' (paper) | 'vdsr' | 'rcan' | 'srcnn' |
                            'bicubic' | 'none' (Table IV)

The teacher is the extractor alone; the student is `SRReID(sr, reid)`.
'bicubic' and 'none' have no SR network (so no L_SR): the LR image,
up-sampled to the network size by the input pipeline, goes straight to the
extractor. They differ only in that up-sampling: 'bicubic' is PIL bicubic
whatever `data.lr_interpolation` says; 'none' uses `data.lr_interpolation`
(`lr_interpolation` below).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.errors import ConfigError
from pshrnet_jax.models.pshrnet import HEAD_KINDS
from pshrnet_jax.models.pshrnet import HRNetReID
from pshrnet_jax.models.pshrnet import PSHRNet
from pshrnet_jax.models.pshrnet import SRReID
from pshrnet_jax.models.rcan import RCAN
from pshrnet_jax.models.resnet import ResNet50ReID
from pshrnet_jax.models.srcnn import SRCNN
from pshrnet_jax.models.vdsr_ca import VDSRCA

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BACKBONES = ("hrnet", "resnet50")
SR_MODULES = ("vdsr_ca", "vdsr", "rcan", "srcnn", "bicubic", "none")
# Up-sampling only: no SR network, no L_SR.
NO_SR_NETWORK = ("bicubic", "none")


def compute_dtype(model_config: Any):
  """The jnp dtype of `config.model.compute_dtype`."""
  try:
    return COMPUTE_DTYPES[model_config.compute_dtype]
  except KeyError:
    raise ConfigError(
        f"--config.model.compute_dtype={model_config.compute_dtype!r}; "
        f"expected one of {sorted(COMPUTE_DTYPES)}") from None


def _choice(model_config: Any, field: str, choices: tuple[str, ...]) -> str:
  value = model_config[field]
  if value not in choices:
    raise ConfigError(f"--config.model.{field}={value!r}; expected one of "
                      f"{choices}.")
  return value


def check_model_config(model_config: Any) -> None:
  """Raises ConfigError for an unknown backbone, head or SR module, or a head
  the backbone does not have."""
  backbone = _choice(model_config, "backbone", BACKBONES)
  head = _choice(model_config, "head", HEAD_KINDS)
  _choice(model_config, "sr_module", SR_MODULES)
  if backbone == "resnet50" and head != "reid":
    raise ConfigError(
        f"--config.model.head={head!r} is an HRNet option; the resnet50 "
        "extractor always pools layer4 globally into the FC block (use "
        "--config.model.head=reid).")


def build_teacher(model_config: Any, num_classes: int) -> nn.Module:
  """The extractor alone: the phase-1 model and the frozen teacher.

  Args:
    model_config: `config.model`.
    num_classes: training identities M.

  Returns:
    HRNetReID (backbone 'hrnet', with the configured head) or ResNet50ReID.
  """
  m = model_config
  check_model_config(m)
  common = dict(num_classes=num_classes, dropout_rate=m.dropout_rate,
                dtype=compute_dtype(m))
  if m.backbone == "resnet50":
    return ResNet50ReID(width=m.resnet_width,
                        blocks=tuple(m.resnet_blocks), **common)
  return HRNetReID(width=m.width, pooling=m.pooling,
                   head_planes=tuple(m.head_planes),
                   num_modules=tuple(m.hrnet_modules),
                   num_blocks=m.hrnet_blocks, head_kind=m.head, **common)


def build_sr(model_config: Any) -> Optional[nn.Module]:
  """The configured SR network, or None for 'bicubic' / 'none'."""
  m = model_config
  check_model_config(m)
  common = dict(dtype=compute_dtype(m))
  if m.sr_module in ("vdsr_ca", "vdsr"):
    return VDSRCA(m.sr_blocks, m.sr_features,
                  channel_attention=m.sr_module == "vdsr_ca", **common)
  if m.sr_module == "rcan":
    return RCAN(m.rcan_groups, m.rcan_blocks, m.sr_features,
                m.rcan_reduction, **common)
  if m.sr_module == "srcnn":
    return SRCNN(tuple(m.srcnn_features), **common)
  return None


def build_student(model_config: Any, num_classes: int) -> SRReID:
  """The configured SR module followed by the extractor.

  Args:
    model_config: `config.model`.
    num_classes: training identities M.
  """
  return SRReID(reid=build_teacher(model_config, num_classes),
                sr=build_sr(model_config))


def has_sr_network(model_config: Any) -> bool:
  """Whether the student has an SR network (whose output is scored)."""
  return model_config.sr_module not in NO_SR_NETWORK


def lr_interpolation(config: Any) -> str:
  """How LR images are up-sampled to the network size, for this model.

  'bicubic' for `model.sr_module=bicubic` (that is the whole module),
  `data.lr_interpolation` otherwise.
  """
  if config.model.sr_module == "bicubic":
    return "bicubic"
  return config.data.lr_interpolation


def build(model_config: Any, num_classes: int, which: str):
  """`build_teacher` for 'teacher', `build_student` for 'student'."""
  if which == "teacher":
    return build_teacher(model_config, num_classes)
  if which == "student":
    return build_student(model_config, num_classes)
  raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")


@functools.lru_cache(maxsize=32)
def abstract_variables(module: nn.Module,
                       input_shape: tuple[int, ...]) -> dict[str, Any]:
  """`module`'s variables as shapes and dtypes (`jax.ShapeDtypeStruct`s)
  for inputs of `input_shape` (NHWC): `jax.eval_shape` of its init.

  Cached per (module, shape): tracing HRNet's init takes about a second, and
  a run asks several times (the step, the checkpoint's abstract state, the
  fit of a teacher or of ImageNet weights). Treat the result as read-only.
  """
  return dict(jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros(input_shape), train=False)))


# --- Rebuilding a model from what a folder records ---------------------------

# Models whose features can be extracted, and the networks inside them.
_EXTRACTORS = {cls.__name__: cls for cls in
               (HRNetReID, PSHRNet, SRReID, ResNet50ReID)}
_PARTS = {cls.__name__: cls for cls in (VDSRCA, RCAN, SRCNN)}


def describe(module: nn.Module) -> dict[str, Any]:
  """{'model': class name, 'model_kwargs': JSON-able arguments}.

  Exports and converted checkpoints store this beside the variables, so a
  model is rebuilt from the folder (`from_description`), never from numbers
  a user repeats. A network inside the model (SRReID's `reid` and `sr`) is
  described the same way, nested.
  """
  kwargs = {}
  for field in dataclasses.fields(module):
    if field.name in ("parent", "name"):
      continue
    value = getattr(module, field.name)
    if isinstance(value, nn.Module):
      value = describe(value)
    elif field.name == "dtype":
      value = jnp.dtype(value).name
    elif isinstance(value, tuple):
      value = list(value)
    kwargs[field.name] = value
  return {"model": type(module).__name__, "model_kwargs": kwargs}


def from_description(description: Mapping[str, Any], where: str,
                     _classes: Mapping[str, type] = _EXTRACTORS):
  """The module `describe` recorded.

  Args:
    description: a dict with 'model' and 'model_kwargs'.
    where: the file it came from, for messages.

  Raises:
    ConfigError: not a ReID model this project builds, or arguments that
      the model does not take.
  """
  name = description.get("model")
  if name not in _classes:
    raise ConfigError(
        f"{where} describes a {name!r} model; only re-ID models "
        f"({sorted(_EXTRACTORS)}) can extract features.")
  kwargs = {}
  for key, value in dict(description.get("model_kwargs") or {}).items():
    if isinstance(value, Mapping) and "model" in value:
      value = from_description(value, where, {**_EXTRACTORS, **_PARTS})
    elif key == "dtype":
      value = jnp.dtype(value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[key] = value
  try:
    return _classes[name](**kwargs)
  except TypeError as e:
    raise ConfigError(f"{where}: the recorded arguments of {name} do not "
                      f"fit this version of the model ({e}).") from None
