"""The model registry: the one place that maps `config.model` to networks
(BACKBONES with their heads, SR_MODULES), so training, evaluation and loading
build the same ones. `check_model_config` validates the choices once; the
builders trust them. The teacher is the extractor alone, the student
`SRReID(reid, sr)`. 'bicubic' and 'none' have no SR network (no L_SR): the
pipeline's up-sampled LR image goes straight to the extractor ('bicubic':
PIL bicubic, scored as its SR output, the SR literature's baseline row).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pshrnet_jax.errors import ConfigError
from pshrnet_jax.models.pshrnet import HRNetReID
from pshrnet_jax.models.pshrnet import SRReID
from pshrnet_jax.models.rcan import RCAN
from pshrnet_jax.models.resnet import ResNet50ReID
from pshrnet_jax.models.srcnn import SRCNN
from pshrnet_jax.models.vdsr_ca import VDSRCA

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Backbone:
  """An extractor family: its builder ((config.model, num_classes, dtype) ->
  module), its `config.model.head`s, and its ImageNet weights' convert
  --kind and name."""
  build: Callable[[Any, int, Any], nn.Module]
  heads: tuple[str, ...]
  imagenet_kind: str
  imagenet_name: Callable[[Any], str]


@dataclasses.dataclass(frozen=True)
class SRModule:
  """What restores the LR query: its builder ((config.model, dtype) -> module,
  None: no network), the pipeline's up-sampling for it (None:
  `data.lr_interpolation`), and whether evaluation scores its output."""
  build: Optional[Callable[[Any, Any], nn.Module]]
  upsampling: Optional[str] = None
  output_scored: bool = True


def _hrnet(m, num_classes: int, dtype) -> nn.Module:
  return HRNetReID(width=m.width, num_classes=num_classes, pooling=m.pooling,
                   head_planes=tuple(m.head_planes),
                   dropout_rate=m.dropout_rate,
                   num_modules=tuple(m.hrnet_modules),
                   num_blocks=m.hrnet_blocks, dtype=dtype, head_kind=m.head)


def _resnet50(m, num_classes: int, dtype) -> nn.Module:
  return ResNet50ReID(num_classes=num_classes, width=m.resnet_width,
                      blocks=tuple(m.resnet_blocks),
                      dropout_rate=m.dropout_rate, dtype=dtype)


BACKBONES = {
    "hrnet": Backbone(_hrnet, ("reid", "imagenet"), "hrnet",
                      lambda m: f"HRNet-W{m.width}-C"),
    "resnet50": Backbone(_resnet50, ("reid",), "resnet50",
                         lambda m: "torchvision ResNet-50"),
}
SR_MODULES = {
    "vdsr_ca": SRModule(lambda m, dtype: VDSRCA(
        m.sr_blocks, m.sr_features, m.sr_features // m.ca_reduction,
        channel_attention=True, dtype=dtype)),
    "vdsr": SRModule(lambda m, dtype: VDSRCA(
        m.sr_blocks, m.sr_features, channel_attention=False, dtype=dtype)),
    "rcan": SRModule(lambda m, dtype: RCAN(
        m.rcan_groups, m.rcan_blocks, m.sr_features, m.rcan_reduction,
        dtype=dtype)),
    "srcnn": SRModule(lambda m, dtype: SRCNN(tuple(m.srcnn_features),
                                             dtype=dtype)),
    "bicubic": SRModule(None, upsampling="bicubic"),
    "none": SRModule(None, output_scored=False),
}


def check_model_config(model_config: Any) -> None:
  """Raises ConfigError for an unknown backbone, head, SR module or compute
  dtype, a head the backbone does not have, or a channel-attention
  reduction that does not divide VDSR-CA's width."""
  m = model_config
  for field, choices in (("backbone", BACKBONES), ("sr_module", SR_MODULES),
                         ("compute_dtype", COMPUTE_DTYPES)):
    if m[field] not in choices:
      raise ConfigError(f"--config.model.{field}={m[field]!r}: expected one "
                        f"of {tuple(choices)}.")
  heads = BACKBONES[m.backbone].heads
  if m.head not in heads:
    raise ConfigError(f"--config.model.head={m.head!r}: the {m.backbone} "
                      f"extractor has the heads {heads}.")
  r, features = m.ca_reduction, m.sr_features
  if isinstance(r, bool) or not isinstance(r, int) or r < 1:
    raise ConfigError(f"--config.model.ca_reduction={r!r}: expected an "
                      "integer >= 1 (VDSR-CA's attention squeezes "
                      "sr_features / ca_reduction channels).")
  if (m.sr_module == "vdsr_ca" and isinstance(features, int)
      and features % r):
    raise ConfigError(
        f"--config.model.ca_reduction={r}: does not divide "
        f"--config.model.sr_features={features} (VDSR-CA's attention "
        f"squeezes sr_features / ca_reduction channels).")


def build_teacher(model_config: Any, num_classes: int) -> nn.Module:
  """The extractor alone (phase 1's model, the frozen teacher), M classes."""
  m = model_config
  return BACKBONES[m.backbone].build(m, num_classes,
                                     COMPUTE_DTYPES[m.compute_dtype])


def build_sr(model_config: Any) -> Optional[nn.Module]:
  """The configured SR network, or None for 'bicubic' / 'none'."""
  m = model_config
  build = SR_MODULES[m.sr_module].build
  return None if build is None else build(m, COMPUTE_DTYPES[m.compute_dtype])


def build_student(model_config: Any, num_classes: int) -> SRReID:
  """The configured SR module followed by the extractor, M classes."""
  return SRReID(reid=build_teacher(model_config, num_classes),
                sr=build_sr(model_config))


def lr_interpolation(config: Any) -> str:
  """How LR images are up-sampled to the network size, for this model."""
  return (SR_MODULES[config.model.sr_module].upsampling
          or config.data.lr_interpolation)


def sr_output_scored(model_config: Any) -> bool:
  """Whether the student's SR output (or up-sampling) is scored."""
  return SR_MODULES[model_config.sr_module].output_scored


def imagenet_weights(model_config: Any) -> tuple[str, str]:
  """(what the extractor's ImageNet weights are, the convert script's
  --kind)."""
  backbone = BACKBONES[model_config.backbone]
  return backbone.imagenet_name(model_config), backbone.imagenet_kind


def _init(module: nn.Module, input_shape: tuple[int, ...]) -> Any:
  return module.init(jax.random.key(0), jnp.zeros(input_shape), train=False)


# The module and shape are static: jax.jit's trace cache compares them by
# value, so an equal module's shapes are traced once per process.
_init_jit = jax.jit(_init, static_argnums=(0, 1))


def abstract_variables(module: nn.Module,
                       input_shape: tuple[int, ...]) -> dict[str, Any]:
  """`module`'s variables as shapes and dtypes (`jax.ShapeDtypeStruct`s)
  for inputs of `input_shape` (NHWC): the shapes of its init."""
  return dict(_init_jit.eval_shape(module, tuple(input_shape)))


def check_fits(variables: Mapping[str, Any], expected: Mapping[str, Any],
               what: str) -> None:
  """Raises ConfigError unless `variables` have exactly the shapes of
  `expected` (abstract variables); `what` names their origin (flag, path).
  A VDSR-CA whose attention squeezes to another width (the released
  weights' 64 -> 4 against the paper's 64 -> 16) is named with the
  `--config.model.ca_reduction` that fits it."""
  have = {jax.tree_util.keystr(p): np.shape(x) for p, x in
          jax.tree_util.tree_leaves_with_path(dict(variables))}
  want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in
          jax.tree_util.tree_leaves_with_path(dict(expected))}
  problems = [f"{k} is missing" for k in sorted(set(want) - set(have))]
  problems += [f"{k} is not in the model" for k in sorted(set(have) - set(want))]
  differ = [k for k in sorted(set(have) & set(want)) if have[k] != want[k]]
  problems += [f"{k} has shape {have[k]}, the model expects {want[k]}"
               for k in differ]
  if not problems:
    return
  hint = "Use the model settings it was trained with."
  squeeze = next((k for k in differ if re.search(
      r"\['block_\d+_ca'\]\['squeeze'\]\['kernel'\]", k)), None)
  if squeeze is not None:
    features, channels = have[squeeze][-2:]
    hint = (f"Its VDSR-CA attention squeezes {features} -> {channels} "
            f"channels, the configured one {features} -> {want[squeeze][-1]}:"
            f" pass --config.model.ca_reduction={features // channels}"
            " (64 -> 4, ca_reduction=16, is the released weights' layout;"
            " 64 -> 16, ca_reduction=4, the paper's r = 4).")
  raise ConfigError(
      f"{what} does not fit the configured model (--config.model.*): "
      f"{'; '.join(problems[:3])}"
      + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
      + f". {hint}")


# --- Rebuilding a model from what a folder records ---------------------------

# Models whose features can be extracted, and the networks inside them.
_EXTRACTORS = {cls.__name__: cls for cls in
               (HRNetReID, SRReID, ResNet50ReID)}
_PARTS = {cls.__name__: cls for cls in (VDSRCA, RCAN, SRCNN)}


def describe(module: nn.Module) -> dict[str, Any]:
  """{'model': class name, 'model_kwargs': JSON-able arguments (inner
  networks nested)}, stored beside exported variables so a model is rebuilt
  from its folder (`from_description`), never from numbers a user repeats."""
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
  """The module `describe` recorded (read from the file `where`).

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
