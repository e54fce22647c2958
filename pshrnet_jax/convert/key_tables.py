"""PyTorch key names -> Flax parameter paths, as tables of templates.

Each row is (PyTorch template, Flax template, kind); the kind fixes the leaf
names (`LEAVES`) and transform (conv OIHW -> HWIO, Linear (out, in) -> (in,
out)).
"""

from __future__ import annotations

import re

# Template fields: {c} a Bottleneck/BasicBlock conv, {n} its BatchNorm, any
# other single letter a non-negative integer.
FIELDS = {"c": r"conv[123]", "n": r"bn[123]"}

BACKBONE = (
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
INCRE = (
    ("incre_modules.{i}.0.{c}", "branch{i}/{c}", "conv"),
    ("incre_modules.{i}.0.{n}", "branch{i}/{n}", "bn"),
    ("incre_modules.{i}.0.downsample.0", "branch{i}/downsample_conv", "conv"),
    ("incre_modules.{i}.0.downsample.1", "branch{i}/downsample_bn", "bn"),
)
IMAGENET_HEAD = (
    ("downsamp_modules.{i}.0", "downsamp_modules_{i}/conv", "conv"),
    ("downsamp_modules.{i}.1", "downsamp_modules_{i}/bn", "bn"),
    ("final_layer.0", "final_layer/conv", "conv"),
    ("final_layer.1", "final_layer/bn", "bn"),
    ("classifier", "classifier", "linear"),
)
REID_HEAD = (
    ("add_block.0", "fc1", "linear"), ("add_block.1", "bn", "bn"),
    ("classifier.0", "fc2", "linear"),
)
VDSR = (
    ("input", "input", "conv"), ("output", "output", "conv"),
    ("residual_layer.{k}.conv", "block_{k}_conv", "conv"),
    ("residual_layer.{k}.ca.module.1", "block_{k}_ca/squeeze", "conv"),
    ("residual_layer.{k}.ca.module.3", "block_{k}_ca/excite", "conv"),
)
# torchvision ResNet (Bottleneck layers), under the model's `backbone`.
RESNET = (
    ("conv1", "conv1", "conv"), ("bn1", "bn1", "bn"),
    ("layer{l}.{k}.{c}", "layer{l}_{k}/{c}", "conv"),
    ("layer{l}.{k}.{n}", "layer{l}_{k}/{n}", "bn"),
    ("layer{l}.{k}.downsample.0", "layer{l}_{k}/downsample_conv", "conv"),
    ("layer{l}.{k}.downsample.1", "layer{l}_{k}/downsample_bn", "bn"),
)
RESNET_FC = (("fc", "fc", "linear"),)
# PyTorch leaf -> (collection, Flax leaf) per layer kind.
LEAVES = {
    "conv": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "linear": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "bn": {"weight": ("params", "scale"), "bias": ("params", "bias"),
           "running_mean": ("batch_stats", "mean"),
           "running_var": ("batch_stats", "var")},
}


def template_regex(template: str, sep: str) -> re.Pattern:
  parts = re.split(r"\{(\w)\}", template)
  out = []
  for n, part in enumerate(parts):
    if n % 2:
      out.append(f"(?P<{part}>{FIELDS.get(part, r'[0-9]+')})")
    else:
      out.append(re.escape(part))
  return re.compile("".join(out) + re.escape(sep) + r"(?P<leaf>\w+)")


class Part:
  """One part of a checkpoint: an anchor key, a table, a Flax root."""

  def __init__(self, name, anchor, table, root, *, ignored=False):
    self.name, self.anchor = name, anchor
    self.root, self.ignored = root, ignored
    self.rows = [(template_regex(t, "."), template_regex(f, "/"), t, f, kind)
                 for t, f, kind in table]
    self.prefix = None

  def to_flax(self, rest: str):
    """'stage2.0....weight' -> (collection, flax path tuple, kind) or None."""
    for torch_re, _, _, flax_t, kind in self.rows:
      m = torch_re.fullmatch(rest)
      if m and m["leaf"] in LEAVES[kind]:
        collection, leaf = LEAVES[kind][m["leaf"]]
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
        for torch_leaf, (_, leaf) in LEAVES[kind].items():
          if leaf == m["leaf"]:
            return ((self.prefix or "") + torch_t.format(**m.groupdict())
                    + "." + torch_leaf)
    return None
