"""PyTorch checkpoints -> Flax variables, and the Orbax format they are kept in.

Accepted checkpoints (read with `pshrnet_jax.torch_io`, which never executes
pickled code; a mapping of name -> array/tensor is accepted too):

* ImageNet HRNet-W*-C (`load_torch_hrnet`): the official
  HRNet-Image-Classification keys (conv1, bn1, conv2, bn2, layer1,
  transition1..3, stage2..4, incre_modules, downsamp_modules, final_layer,
  classifier) and timm's `hrnet_w*` (the same names).
* Released PS-HRNet models (`load_torch_pshrnet`): the HRNet keys above,
  `classifier.add_block.{0,1}` / `classifier.classifier.0` (the ReID
  ClassBlock) and, for the student, `vdsr.input`, `vdsr.residual_layer.N.conv`,
  `vdsr.residual_layer.N.ca.module.{1,3}`, `vdsr.output`. The unused ImageNet
  head those models still carry (downsamp_modules, final_layer, an ImageNet
  `classifier.weight/bias`) is skipped and listed in the conversion info.

Keys may carry a DataParallel 'module.' prefix (stripped) and each part
(backbone, incre_modules, ReID head, SR net) any common prefix ('model.',
'backbone.', 'vdsr.', ...), detected from an anchor key. Wrappers
{'state_dict' | 'model' | 'state_dict_ema' | 'net' | 'module': ...} are
unwrapped; `num_batches_tracked` is dropped. Anything else left over on either
side, or a shape mismatch, raises `ConversionError` naming the source, the
first offending key and both shapes.

Keys are renamed through tables of (PyTorch template, Flax template, kind);
the kind fixes the leaf transform: conv OIHW -> HWIO, Linear (out, in) ->
(in, out), BatchNorm weight/bias/running_mean/running_var -> params
scale/bias, batch_stats mean/var.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pshrnet_jax import models
from pshrnet_jax import torch_io
# Re-exported: the on-disk format of converted and trained variables.
from pshrnet_jax.variables_io import restore_variables  # pylint: disable=unused-import
from pshrnet_jax.variables_io import save_variables  # pylint: disable=unused-import

Variables = dict[str, Any]


class ConversionError(ValueError):
  """A checkpoint that does not match the model; names key and shapes."""


# Template fields: {c} a Bottleneck/BasicBlock conv, {n} its BatchNorm, any
# other single letter a non-negative integer.
_FIELDS = {"c": r"conv[123]", "n": r"bn[123]"}

_BACKBONE = (
    ("conv1", "conv1", "conv"), ("bn1", "bn1", "bn"),
    ("conv2", "conv2", "conv"), ("bn2", "bn2", "bn"),
    ("layer1.{k}.{c}", "layer1_{k}/{c}", "conv"),
    ("layer1.{k}.{n}", "layer1_{k}/{n}", "bn"),
    ("layer1.{k}.downsample.0", "layer1_{k}/downsample_conv", "conv"),
    ("layer1.{k}.downsample.1", "layer1_{k}/downsample_bn", "bn"),
    ("transition{t}.{i}.0", "transition{t}_{i}/conv", "conv"),
    ("transition{t}.{i}.1", "transition{t}_{i}/bn", "bn"),
    ("transition{t}.{i}.{k}.0", "transition{t}_{i}_{k}/conv", "conv"),
    ("transition{t}.{i}.{k}.1", "transition{t}_{i}_{k}/bn", "bn"),
    ("stage{s}.{m}.branches.{b}.{k}.{c}", "stage{s}_{m}/branch{b}_{k}/{c}", "conv"),
    ("stage{s}.{m}.branches.{b}.{k}.{n}", "stage{s}_{m}/branch{b}_{k}/{n}", "bn"),
    ("stage{s}.{m}.fuse_layers.{i}.{j}.0", "stage{s}_{m}/fuse_{i}_{j}/conv", "conv"),
    ("stage{s}.{m}.fuse_layers.{i}.{j}.1", "stage{s}_{m}/fuse_{i}_{j}/bn", "bn"),
    ("stage{s}.{m}.fuse_layers.{i}.{j}.{k}.0", "stage{s}_{m}/fuse_{i}_{j}_{k}/conv", "conv"),
    ("stage{s}.{m}.fuse_layers.{i}.{j}.{k}.1", "stage{s}_{m}/fuse_{i}_{j}_{k}/bn", "bn"),
)
_INCRE = (
    ("incre_modules.{i}.0.{c}", "branch{i}/{c}", "conv"),
    ("incre_modules.{i}.0.{n}", "branch{i}/{n}", "bn"),
    ("incre_modules.{i}.0.downsample.0", "branch{i}/downsample_conv", "conv"),
    ("incre_modules.{i}.0.downsample.1", "branch{i}/downsample_bn", "bn"),
)
_IMAGENET_HEAD = (
    ("downsamp_modules.{i}.0", "downsamp_modules_{i}/conv", "conv"),
    ("downsamp_modules.{i}.1", "downsamp_modules_{i}/bn", "bn"),
    ("final_layer.0", "final_layer/conv", "conv"),
    ("final_layer.1", "final_layer/bn", "bn"),
    ("classifier", "classifier", "linear"),
)
_REID_HEAD = (
    ("add_block.0", "fc1", "linear"), ("add_block.1", "bn", "bn"),
    ("classifier.0", "fc2", "linear"),
)
_VDSR = (
    ("input", "input", "conv"), ("output", "output", "conv"),
    ("residual_layer.{k}.conv", "block_{k}_conv", "conv"),
    ("residual_layer.{k}.ca.module.1", "block_{k}_ca/squeeze", "conv"),
    ("residual_layer.{k}.ca.module.3", "block_{k}_ca/excite", "conv"),
)
# PyTorch leaf -> (collection, Flax leaf) per layer kind.
_LEAVES = {
    "conv": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "linear": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "bn": {"weight": ("params", "scale"), "bias": ("params", "bias"),
           "running_mean": ("batch_stats", "mean"),
           "running_var": ("batch_stats", "var")},
}


def _template_regex(template: str, sep: str) -> re.Pattern:
  parts = re.split(r"\{(\w)\}", template)
  out = []
  for n, part in enumerate(parts):
    if n % 2:
      out.append(f"(?P<{part}>{_FIELDS.get(part, r'[0-9]+')})")
    else:
      out.append(re.escape(part))
  return re.compile("".join(out) + re.escape(sep) + r"(?P<leaf>\w+)")


class _Part:
  """One part of a checkpoint: an anchor key, a table, a Flax root."""

  def __init__(self, name, anchor, table, root, *, ignored=False):
    self.name, self.anchor, self.root, self.ignored = name, anchor, root, ignored
    self.rows = [(_template_regex(t, "."), _template_regex(f, "/"), t, f, kind)
                 for t, f, kind in table]
    self.prefix = None

  def to_flax(self, rest: str):
    """'stage2.0....weight' -> (collection, flax path tuple, kind) or None."""
    for torch_re, _, _, flax_t, kind in self.rows:
      m = torch_re.fullmatch(rest)
      if m and m["leaf"] in _LEAVES[kind]:
        collection, leaf = _LEAVES[kind][m["leaf"]]
        path = flax_t.format(**m.groupdict()).split("/")
        return collection, tuple(self.root) + tuple(path) + (leaf,), kind
    return None

  def to_torch(self, path: tuple[str, ...]) -> str | None:
    """The inverse of `to_flax`, for naming missing keys."""
    if tuple(path[:len(self.root)]) != tuple(self.root):
      return None
    rel = "/".join(path[len(self.root):])
    for _, flax_re, torch_t, _, kind in self.rows:
      m = flax_re.fullmatch(rel)
      if m:
        for torch_leaf, (_, leaf) in _LEAVES[kind].items():
          if leaf == m["leaf"]:
            return (self.prefix or "") + torch_t.format(**m.groupdict()) + "." + torch_leaf
    return None


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
    for key in ("state_dict", "model", "state_dict_ema", "net", "module"):
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


def _find_prefix(state: Mapping[str, np.ndarray], part: _Part, source: str,
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


def _hrnet_config(state, backbone: _Part, incre: _Part, source: str,
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


def _sr_config(state, vdsr: _Part) -> dict[str, Any]:
  """VDSR depth, width and attention, read from the weights."""
  pre = vdsr.prefix
  blocks = {int(m.group(1)) for k in state
            if (m := re.match(re.escape(pre) + r"residual_layer\.(\d+)\.", k))}
  squeeze = state.get(pre + "residual_layer.0.ca.module.1.weight")
  features = state.get(pre + "input.weight")
  return {"sr_module": "vdsr" if squeeze is None else "vdsr_ca",
          "sr_blocks": max(blocks) + 1,
          "sr_features": 64 if features is None else int(features.shape[0]),
          "sr_squeeze_channels": 4 if squeeze is None else int(squeeze.shape[0])}


def _torch_shape(flax_shape, kind: str, leaf: str) -> tuple[int, ...]:
  if leaf == "kernel" and kind == "conv" and len(flax_shape) == 4:
    return tuple(flax_shape[i] for i in (3, 2, 0, 1))
  if leaf == "kernel" and kind == "linear":
    return tuple(reversed(flax_shape))
  return tuple(flax_shape)


def _build(state, source, parts, module, sample_shape=(1, 64, 64, 3)):
  """Renames every key through `parts`; checks it against `module`."""
  expected = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros(sample_shape), train=False))
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


def convert_checkpoint(
    path_or_state_dict: Any, kind: str = "hrnet", *, width: int | None = None,
    pooling: str = "avgmax") -> tuple[Variables, nn.Module, dict[str, Any]]:
  """Converts a PyTorch checkpoint and returns the model it belongs to.

  Args:
    path_or_state_dict: a `.pth` path or a mapping name -> array/tensor.
    kind: 'hrnet' (ImageNet HRNet-W*-C -> HRNetClassifier), 'teacher'
      (released HRNet-ReID -> HRNetReID) or 'student' (released PS-HRNet ->
      PSHRNet).
    width: the expected HRNet width; None accepts the checkpoint's.
    pooling: ReID pooling mode (not stored in the weights).

  Returns:
    (variables, module, info): Flax {'params', 'batch_stats'}, the module
    they fit (width, classes, head and SR sizes read from the weights), and
    a JSON-able description of the conversion.

  Raises:
    ConversionError: the checkpoint does not match (names key and shapes).
    torch_io.TorchFileError: unreadable file. FileNotFoundError: no file.
  """
  if kind not in ("hrnet", "teacher", "student"):
    raise ValueError(f"kind must be 'hrnet', 'teacher' or 'student', got {kind!r}")
  state, source = _read(path_or_state_dict)
  root = ("reid",) if kind == "student" else ()
  backbone = _Part("HRNet backbone", "layer1.0.conv1.weight", _BACKBONE,
                   root + ("backbone",))
  incre = _Part("HRNet incre_modules", "incre_modules.0.0.conv1.weight",
                _INCRE, root + ("incre_modules",))
  head = _Part("ImageNet head", "final_layer.0.weight", _IMAGENET_HEAD, (),
               ignored=kind != "hrnet")
  reid = _Part("ReID ClassBlock", "add_block.0.weight", _REID_HEAD,
               root + ("head",))
  vdsr = _Part("VDSR", "residual_layer.0.conv.weight", _VDSR, ("sr",))
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
    if kind == "teacher":
      module = models.HRNetReID(**config)
    else:
      config.update(_sr_config(state, vdsr))
      module = models.PSHRNet(**config)
  variables, ignored = _build(state, source, parts, module)
  info = {"source": source, "kind": kind, "model": type(module).__name__,
          "model_kwargs": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in config.items()},
          "prefixes": {p.name: p.prefix for p in parts},
          "ignored_keys": ignored, "num_tensors": len(state) - len(ignored),
          "num_params": int(sum(v.size for v in
                                jax.tree.leaves(variables["params"])))}
  return variables, module, info


def load_torch_hrnet(path_or_state_dict: Any, width: int | None = None) -> Variables:
  """Flax variables for `HRNetClassifier` from an ImageNet HRNet-W*-C file.

  Args:
    path_or_state_dict: official `hrnetv2_w32_imagenet_pretrained.pth`, a timm
      `hrnet_w32` state dict, or a mapping name -> array/tensor.
    width: the expected width (e.g. 32); None accepts the checkpoint's.
      Width and num_classes are read from the weights.

  Returns:
    {'params': ..., 'batch_stats': ...} for `HRNetClassifier(width, num_classes)`.
  """
  return convert_checkpoint(path_or_state_dict, "hrnet", width=width)[0]


def load_torch_pshrnet(path_or_state_dict: Any, kind: str = "student", *,
                       width: int | None = None) -> Variables:
  """Flax variables from a released PS-HRNet student or teacher checkpoint.

  Args:
    path_or_state_dict: a `.pth` path or a mapping name -> array/tensor.
    kind: 'student' (-> `PSHRNet`) or 'teacher' (-> `HRNetReID`).
    width: the expected width; None accepts the checkpoint's.

  Returns:
    {'params': ..., 'batch_stats': ...}; see `convert_checkpoint` for the
    module configuration they fit.
  """
  if kind not in ("student", "teacher"):
    raise ValueError(f"kind must be 'student' or 'teacher', got {kind!r}")
  return convert_checkpoint(path_or_state_dict, kind, width=width)[0]


_SHARED = ("backbone", "incre_modules")


def _copy_shared(src: Variables, dst: Variables, dst_root: tuple[str, ...],
                 what: str) -> Variables:
  """`dst` with its backbone + incre_modules (params, batch_stats) from `src`."""
  out = dict(dst)
  for collection in ("params", "batch_stats"):
    if collection not in src or collection not in dst:
      raise ConversionError(f"{what}: both sides need {collection!r} (got "
                            f"{sorted(src)} and {sorted(dst)})")
    out[collection] = node = dict(dst[collection])
    for p in dst_root:
      node[p] = dict(node[p])
      node = node[p]
    for name in _SHARED:
      theirs = dict(jax.tree_util.tree_leaves_with_path(src[collection].get(name, {})))
      ours = dict(jax.tree_util.tree_leaves_with_path(node.get(name, {})))
      where = lambda path: f"{collection}/{name}{jax.tree_util.keystr(path)}"
      for path in sorted(set(theirs) ^ set(ours), key=str):
        raise ConversionError(f"{what}: {where(path)} is only in the "
                              f"{'source' if path in theirs else 'target'}")
      for path, leaf in ours.items():
        if np.shape(leaf) != np.shape(theirs[path]):
          raise ConversionError(
              f"{what}: {where(path)} has shape {np.shape(theirs[path])} in "
              f"the source, {np.shape(leaf)} in the target")
      node[name] = src[collection][name]
  return out


def reid_from_imagenet(classifier_variables: Variables,
                       reid_variables: Variables) -> Variables:
  """HRNetReID variables with backbone + incre_modules from an HRNetClassifier.

  Args:
    classifier_variables: {'params', 'batch_stats'} of an HRNetClassifier.
    reid_variables: an HRNetReID's variables (its `head` is kept).

  Returns:
    New variables (the inputs are not modified).
  """
  return _copy_shared(classifier_variables, reid_variables, (),
                      "reid_from_imagenet")


def student_from_teacher(teacher_variables: Variables,
                         student_variables: Variables) -> Variables:
  """PSHRNet variables whose `reid` backbone + incre_modules are the teacher's.

  Args:
    teacher_variables: an HRNetReID's {'params', 'batch_stats'}.
    student_variables: a PSHRNet's variables (its `sr` and ReID head kept).

  Returns:
    New variables (the inputs are not modified).
  """
  return _copy_shared(teacher_variables, student_variables, ("reid",),
                      "student_from_teacher")
