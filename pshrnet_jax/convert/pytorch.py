"""PyTorch checkpoints -> Flax variables, with strict key and shape checks.

Accepted: ImageNet HRNet-W*-C (official HRNet-Image-Classification or timm
`hrnet_w*` keys), torchvision's ResNet-50 (v1.5 layout: a Caffe-style v1
checkpoint has the same keys and shapes and cannot be told apart), and the
released PS-HRNet teacher and student (whose unused ImageNet head is skipped
and listed in the conversion info). Each part (backbone, incre_modules, ReID
head, SR net) may carry any key prefix, found from an anchor key; a
DataParallel 'module.' is stripped, `num_batches_tracked` dropped. A key left
over on either side, or a shape mismatch, raises ConversionError naming it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from pshrnet_jax import models
from pshrnet_jax.models import factory
from pshrnet_jax.convert.key_tables import BACKBONE
from pshrnet_jax.convert.key_tables import IMAGENET_HEAD
from pshrnet_jax.convert.key_tables import INCRE
from pshrnet_jax.convert.key_tables import Part
from pshrnet_jax.convert.key_tables import REID_HEAD
from pshrnet_jax.convert.key_tables import RESNET
from pshrnet_jax.convert.key_tables import RESNET_FC
from pshrnet_jax.convert.key_tables import VDSR
from pshrnet_jax.convert import torch_io
from pshrnet_jax.errors import ConversionError

Variables = dict[str, Any]
KINDS = ("hrnet", "teacher", "student", "resnet50")


def _as_numpy(value: Any, source: str, key: str) -> np.ndarray:
  if hasattr(value, "detach"):  # A torch tensor handed in by a caller.
    value = value.detach().cpu().numpy()
  if not hasattr(value, "shape"):
    raise ConversionError(f"{source}: entry {key!r} is not a tensor "
                          f"({type(value).__name__})")
  return np.asarray(value)


def _read(path_or_state_dict: Any) -> tuple[dict[str, np.ndarray], str]:
  """A flat name -> array dict, wrappers unwrapped, 'module.' stripped."""
  if isinstance(path_or_state_dict, (str, os.PathLike)):
    source = os.fspath(path_or_state_dict)
    state = torch_io.load_state_dict(source)
  elif isinstance(path_or_state_dict, Mapping):
    source, state = "<state dict>", path_or_state_dict
    for key in torch_io.WRAPPER_KEYS:
      if isinstance(state.get(key), Mapping):
        state = state[key]
        break
  else:
    raise TypeError("expected a path or a mapping of name -> tensor, got "
                    f"{type(path_or_state_dict).__name__}")
  state = {k: _as_numpy(v, source, k) for k, v in state.items()
           if not k.endswith("num_batches_tracked")}
  if not state:
    raise ConversionError(f"{source}: no tensors")
  while all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return state, source


def _find_prefix(state: Mapping[str, np.ndarray], part: Part, source: str,
                 required: bool) -> str | None:
  hits = [k[:-len(part.anchor)] for k in state
          if k.endswith(part.anchor)
          and (len(k) == len(part.anchor) or k[-len(part.anchor) - 1] == ".")]
  if len(hits) > 1:
    raise ConversionError(f"{source}: several {part.name} found (key prefixes "
                          f"{hits}); convert one model at a time")
  if not hits and required:
    raise ConversionError(
        f"{source}: does not look like a checkpoint with a {part.name}: no key "
        f"ending in {part.anchor!r} (first keys: {list(state)[:5]})")
  return hits[0] if hits else None


def _hrnet_config(state, backbone: Part, incre: Part, source: str,
                  width: int | None) -> dict[str, Any]:
  """Width and incre_modules planes, read from the weights."""
  def shape(prefix, key):
    if prefix + key not in state:
      raise ConversionError(f"{source}: missing key {prefix + key!r}")
    return tuple(state[prefix + key].shape)
  found = shape(backbone.prefix, "transition1.0.0.weight")[0]
  if width is not None and found != width:
    raise ConversionError(
        f"{source}: looks like HRNet-W{found}, expected W{width} (key "
        f"{backbone.prefix}transition1.0.0.weight has shape "
        f"{shape(backbone.prefix, 'transition1.0.0.weight')})")
  planes = tuple(shape(incre.prefix, f"incre_modules.{i}.0.conv1.weight")[0]
                 for i in range(4))
  return {"width": int(found), "head_planes": tuple(int(p) for p in planes)}


def _sr_config(state, vdsr: Part) -> dict[str, Any]:
  """VDSR depth, width and attention, read from the weights."""
  pre = vdsr.prefix
  blocks = {int(m.group(1)) for k in state
            if (m := re.match(re.escape(pre) + r"residual_layer\.(\d+)\.", k))}
  squeeze = state.get(pre + "residual_layer.0.ca.module.1.weight")
  features = state.get(pre + "input.weight")
  return {"channel_attention": squeeze is not None,
          "num_blocks": max(blocks) + 1,
          "features": 64 if features is None else int(features.shape[0]),
          "squeeze_channels": 4 if squeeze is None else int(squeeze.shape[0])}


def _torch_shape(flax_shape, kind: str, leaf: str) -> tuple[int, ...]:
  if leaf == "kernel" and kind == "conv" and len(flax_shape) == 4:
    return tuple(flax_shape[i] for i in (3, 2, 0, 1))
  if leaf == "kernel" and kind == "linear":
    return tuple(reversed(flax_shape))
  return tuple(flax_shape)


def _build(state, source, parts, module, sample_shape=(1, 64, 64, 3)):
  """Renames every key through `parts`; checks it against `module`."""
  expected = factory.abstract_variables(module, tuple(sample_shape))
  expected = {"/".join(str(getattr(p, "key", p)) for p in path): leaf.shape
              for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
  model = type(module).__name__
  flat, ignored = {}, []
  for key, value in state.items():
    hit = None
    for part in parts:
      if part.prefix is not None and key.startswith(part.prefix):
        hit = part.to_flax(key[len(part.prefix):])
        if hit:
          break
    if hit and part.ignored:
      ignored.append(key)
      continue
    flat_key = hit and "/".join((hit[0],) + hit[1])
    if not hit or flat_key not in expected:
      raise ConversionError(
          f"{source}: unexpected key {key!r} {tuple(value.shape)}: no "
          f"counterpart in {model}" + (f" (it maps to {flat_key})" if hit else ""))
    collection, path, kind = hit
    want = tuple(expected.pop(flat_key))
    torch_want = _torch_shape(want, kind, path[-1])
    if tuple(value.shape) != torch_want:
      raise ConversionError(
          f"{source}: key {key!r} has shape {tuple(value.shape)} but {model} "
          f"expects {torch_want} (Flax {flat_key} {want})")
    if path[-1] == "kernel":
      value = value.transpose(2, 3, 1, 0) if kind == "conv" else value.T
    flat[(collection,) + path] = np.asarray(value, np.float32)
  if expected:
    flat_key, shape = next(iter(expected.items()))
    path = tuple(flat_key.split("/"))
    names = [p.to_torch(path[1:]) for p in parts if p.prefix is not None]
    raise ConversionError(
        f"{source}: missing key {next((n for n in names if n), None)!r} for "
        f"Flax {flat_key} {tuple(shape)} ({len(expected)} {model} entries "
        "have no checkpoint key)")
  tree: Variables = {}
  for path, array in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = array
  return tree, ignored


def _info(source, kind, module, parts, state, ignored, variables):
  # `model` and `model_kwargs` rebuild the module (factory.from_description).
  return {"source": source, "kind": kind, **factory.describe(module),
          "prefixes": {p.name: p.prefix for p in parts},
          "ignored_keys": ignored, "num_tensors": len(state) - len(ignored),
          "num_params": int(sum(v.size for v in
                                jax.tree.leaves(variables["params"])))}


def _convert_resnet(state, source):
  """torchvision ResNet-50 -> ResNet50Classifier (see convert_checkpoint)."""
  backbone = Part("ResNet backbone", "layer1.0.conv1.weight", RESNET,
                  ("backbone",))
  fc = Part("ResNet classifier", "fc.weight", RESNET_FC, ())
  parts = [backbone, fc]
  hrnet_keys = [k for k in state
                if re.search(r"(^|\.)(stage2|transition1)\.", k)]
  if hrnet_keys:
    raise ConversionError(f"{source}: an HRNet checkpoint (has "
                          f"{hrnet_keys[0]!r}), not a ResNet: use "
                          "load_torch_hrnet (--kind=hrnet)")
  for part in parts:
    part.prefix = _find_prefix(state, part, source, True)
  pre = backbone.prefix
  blocks = []
  for layer in range(1, 5):
    found = {int(m.group(1)) for k in state if (m := re.match(
        re.escape(pre) + rf"layer{layer}\.(\d+)\.", k))}
    if not found:
      raise ConversionError(f"{source}: no key starting {pre}layer{layer}.: "
                            "not a four-layer ResNet")
    blocks.append(max(found) + 1)
  if pre + "conv1.weight" not in state:
    raise ConversionError(f"{source}: missing key {pre + 'conv1.weight'!r}")
  config = {"num_classes": int(state[fc.prefix + "fc.weight"].shape[0]),
            "width": int(state[pre + "conv1.weight"].shape[0]),
            "blocks": tuple(blocks)}
  module = models.ResNet50Classifier(**config)
  variables, ignored = _build(state, source, parts, module)
  return variables, module, _info(source, "resnet50", module, parts, state,
                                  ignored, variables)


def convert_checkpoint(
    path_or_state_dict: Any, kind: str = "hrnet", *, width: int | None = None,
    pooling: str = "avgmax") -> tuple[Variables, nn.Module, dict[str, Any]]:
  """Converts a PyTorch checkpoint and returns the model it belongs to.

  Args:
    path_or_state_dict: a `.pth` path or a mapping name -> array/tensor
      (wrappers such as {'state_dict': ...} are unwrapped).
    kind: 'hrnet' (-> HRNetClassifier), 'teacher' (released HRNet-ReID ->
      HRNetReID), 'student' (released PS-HRNet -> SRReID of VDSR-CA and
      HRNetReID) or 'resnet50' (torchvision -> ResNet50Classifier).
    width: the expected HRNet width; None accepts the checkpoint's.
    pooling: ReID pooling mode (not stored in the weights).

  Returns:
    (variables, module, info): Flax {'params', 'batch_stats'}, the module
    they fit (sizes read from the weights), and a JSON-able description.

  Raises:
    ConversionError: the checkpoint does not match (names key and shapes).
    TorchFileError: unreadable file. FileNotFoundError: no file.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  state, source = _read(path_or_state_dict)
  if kind == "resnet50":
    return _convert_resnet(state, source)
  if any(re.search(r"(^|\.)layer4\.0\.conv1\.weight$", k) for k in state):
    raise ConversionError(f"{source}: a ResNet checkpoint (has layer4), not "
                          "an HRNet: use load_torch_resnet (--kind=resnet50)")
  root = ("reid",) if kind == "student" else ()
  backbone = Part("HRNet backbone", "layer1.0.conv1.weight", BACKBONE,
                   root + ("backbone",))
  incre = Part("HRNet incre_modules", "incre_modules.0.0.conv1.weight",
                INCRE, root + ("incre_modules",))
  head = Part("ImageNet head", "final_layer.0.weight", IMAGENET_HEAD, (),
               ignored=kind != "hrnet")
  reid = Part("ReID ClassBlock", "add_block.0.weight", REID_HEAD,
               root + ("head",))
  vdsr = Part("VDSR", "residual_layer.0.conv.weight", VDSR, ("sr",))
  parts = [backbone, incre, head] + ([] if kind == "hrnet" else [reid, vdsr])
  required = [backbone, incre, head if kind == "hrnet" else reid]
  for part in parts:
    part.prefix = _find_prefix(state, part, source, part in required)
  if kind == "hrnet" and any(k.endswith("add_block.0.weight") for k in state):
    raise ConversionError(f"{source}: a released PS-HRNet ReID checkpoint (has "
                          "classifier.add_block), not an ImageNet HRNet: use "
                          "load_torch_pshrnet")
  if kind == "teacher" and vdsr.prefix is not None:
    raise ConversionError(f"{source}: has an SR network ({vdsr.prefix}"
                          "residual_layer...): load it with kind='student'")
  if kind == "student" and vdsr.prefix is None:
    raise ConversionError(f"{source}: no SR network (no key ending in "
                          "'residual_layer.0.conv.weight'); a teacher? Load it "
                          "with kind='teacher'")
  config = _hrnet_config(state, backbone, incre, source, width)
  if kind == "hrnet":
    config["num_classes"] = int(state[head.prefix + "classifier.weight"].shape[0])
    config["final_features"] = int(
        state[head.prefix + "final_layer.0.weight"].shape[0])
    module = models.HRNetClassifier(**config)
  else:
    config.update(num_classes=int(state[reid.prefix + "classifier.0.weight"]
                                  .shape[0]), pooling=pooling)
    module = models.HRNetReID(**config)
    if kind == "student":
      module = models.SRReID(reid=module,
                             sr=models.VDSRCA(**_sr_config(state, vdsr)))
  variables, ignored = _build(state, source, parts, module)
  return variables, module, _info(source, kind, module, parts, state,
                                  ignored, variables)


def load_torch_hrnet(path_or_state_dict: Any, width: int | None = None) -> Variables:
  """`HRNetClassifier` variables from an ImageNet HRNet-W*-C checkpoint
  (see `convert_checkpoint`)."""
  return convert_checkpoint(path_or_state_dict, "hrnet", width=width)[0]


def load_torch_pshrnet(path_or_state_dict: Any, kind: str = "student", *,
                       width: int | None = None) -> Variables:
  """Variables of a released PS-HRNet `kind` ('student' or 'teacher')
  checkpoint (see `convert_checkpoint`)."""
  if kind not in ("student", "teacher"):
    raise ValueError(f"kind must be 'student' or 'teacher', got {kind!r}")
  return convert_checkpoint(path_or_state_dict, kind, width=width)[0]


def load_torch_resnet(path_or_state_dict: Any) -> Variables:
  """`ResNet50Classifier` variables from torchvision's `resnet50-*.pth` (see
  `convert_checkpoint`)."""
  return convert_checkpoint(path_or_state_dict, "resnet50")[0]
