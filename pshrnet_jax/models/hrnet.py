"""HRNet backbone and the ImageNet HRNet-W*-C classifier (SPEC 1.2). Flax
names mirror HRNet-Image-Classification's keys (`convert.key_tables`)."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import layers

Dtype = Any

# HighResolutionModules of stages 2, 3, 4 (stage s has s branches), and the
# blocks of layer1 and of every branch: HRNet-W*-C's. Fewer of either make a
# shallower network with the same stages and fusions (tests, CPU demos).
NUM_MODULES = (1, 4, 3)
NUM_BLOCKS = 4
STEM_FEATURES = 64
LAYER1_PLANES = 64
# The ImageNet head's Bottleneck planes per branch (hard-coded in the
# official code whatever the width); outputs are 4x these.
HEAD_PLANES = (32, 64, 128, 256)
FINAL_FEATURES = 2048
# Four stride-2 steps from the input to the lowest-resolution branch, and
# nearest upsampling in the fusion must land exactly on the higher branches.
INPUT_MULTIPLE = 32


def branch_channels(width: int) -> tuple[int, ...]:
  """Channels of the four branches: C, 2C, 4C, 8C."""
  return tuple(width * 2**i for i in range(4))


class HRModule(nn.Module):
  """One HighResolutionModule: BasicBlock branches (`channels` each), then
  multi-scale fusion."""
  channels: Sequence[int]
  num_blocks: int = NUM_BLOCKS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array],
               train: bool = False) -> list[jax.Array]:
    xs = list(xs)
    for b, features in enumerate(self.channels):
      for k in range(self.num_blocks):
        xs[b] = layers.BasicBlock(features, dtype=self.dtype,
                                  name=f"branch{b}_{k}")(xs[b], train)
    fused = []
    for i, features in enumerate(self.channels):
      y = None
      # Same summation order as PyTorch (j = 0, 1, ...).
      for j, x in enumerate(xs):
        if j > i:
          x = layers.ConvBN(features, 1, relu=False, dtype=self.dtype,
                            name=f"fuse_{i}_{j}")(x, train)
          x = layers.upsample_nearest(x, 2**(j - i))
        elif j < i:
          for k in range(i - j):
            last = k == i - j - 1
            x = layers.ConvBN(features if last else self.channels[j], 3, 2,
                              relu=not last, dtype=self.dtype,
                              name=f"fuse_{i}_{j}_{k}")(x, train)
        y = x if y is None else y + x
      fused.append(layers.materialize(nn.relu(y)))
    return fused


class HRNet(nn.Module):
  """HRNet-W`width` backbone: stem, layer1, stages 2-4.

  Attributes:
    width: channels of the highest-resolution branch (18, 32, 48).
    num_modules: HighResolutionModules of stages 2, 3 and 4.
    num_blocks: Bottlenecks of layer1 and BasicBlocks of every branch.
    dtype: computation dtype (parameters stay float32).
  """
  width: int = 32
  num_modules: Sequence[int] = NUM_MODULES
  num_blocks: int = NUM_BLOCKS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    """(B, H, W, 3) images (H, W multiples of 32) -> the four branch maps,
    (B, H/4, W/4, C) ... (B, H/32, W/32, 8C)."""
    if x.ndim != 4 or x.shape[1] % INPUT_MULTIPLE or x.shape[2] % INPUT_MULTIPLE:
      raise ValueError(
          f"HRNet expects (B, H, W, C) images with H and W multiples of "
          f"{INPUT_MULTIPLE}, got shape {x.shape}")
    if len(self.num_modules) != 3 or min(self.num_modules) < 1 or (
        self.num_blocks < 1):
      raise ValueError(f"HRNet needs 3 stages of >= 1 module and >= 1 block; "
                       f"got num_modules={tuple(self.num_modules)}, "
                       f"num_blocks={self.num_blocks}")
    dtype = self.dtype
    x = layers.conv(STEM_FEATURES, 3, 2, dtype=dtype, name="conv1")(x)
    x = nn.relu(layers.batch_norm(train, dtype=dtype, name="bn1")(x))
    x = layers.conv(STEM_FEATURES, 3, 2, dtype=dtype, name="conv2")(x)
    x = nn.relu(layers.batch_norm(train, dtype=dtype, name="bn2")(x))
    for k in range(self.num_blocks):
      x = layers.Bottleneck(LAYER1_PLANES, dtype=dtype,
                            name=f"layer1_{k}")(x, train)

    xs = [x]
    channels = branch_channels(self.width)
    for stage, num_modules in enumerate(self.num_modules, start=2):
      num_branches = stage
      transition = stage - 1
      new_xs = []
      for i in range(num_branches):
        if i < len(xs):
          x = xs[i]
          if x.shape[-1] != channels[i]:
            x = layers.ConvBN(channels[i], 3, dtype=dtype,
                              name=f"transition{transition}_{i}")(x, train)
        else:
          # A new branch grows from the previous stage's last branch.
          x = xs[-1]
          steps = i + 1 - len(xs)
          for k in range(steps):
            features = channels[i] if k == steps - 1 else x.shape[-1]
            x = layers.ConvBN(features, 3, 2, dtype=dtype,
                              name=f"transition{transition}_{i}_{k}")(x, train)
        new_xs.append(x)
      xs = new_xs
      for m in range(num_modules):
        xs = HRModule(channels[:num_branches], self.num_blocks, dtype=dtype,
                      name=f"stage{stage}_{m}")(xs, train)
    return xs


class IncreModules(nn.Module):
  """The per-branch Bottlenecks that widen C..8C to 4 * head_planes; the
  same paths in the ImageNet classifier and the ReID model."""
  head_planes: Sequence[int] = HEAD_PLANES
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array],
               train: bool = False) -> list[jax.Array]:
    if len(xs) != len(self.head_planes):
      raise ValueError(f"IncreModules: {len(xs)} branches but "
                       f"{len(self.head_planes)} head_planes")
    return [
        layers.Bottleneck(planes, dtype=self.dtype,
                          name=f"branch{i}")(x, train)
        for i, (planes, x) in enumerate(zip(self.head_planes, xs))
    ]


def imagenet_representation(xs: Sequence[jax.Array], train: bool, *,
                            head_planes: Sequence[int] = HEAD_PLANES,
                            final_features: int = FINAL_FEATURES,
                            dtype: Dtype = jnp.float32) -> jax.Array:
  """HRNet-W*-C's ImageNet representation head on the incre_modules outputs
  `xs`: (B, final_features), pooled.

  Each branch goes down to the next one's resolution (`downsamp_modules_i`,
  stride-2 ConvBN) and is added to it; `final_layer` (1x1 ConvBN) and global
  average pooling follow. Called from a compact method, its layers become the
  caller's children, under the names ImageNet weights convert to.
  """
  y = xs[0]
  for i in range(len(xs) - 1):
    down = layers.ConvBN(4 * head_planes[i + 1], 3, 2, use_bias=True,
                         dtype=dtype, name=f"downsamp_modules_{i}")
    y = xs[i + 1] + down(y, train)
  y = layers.ConvBN(final_features, 1, use_bias=True, dtype=dtype,
                    name="final_layer")(y, train)
  return jnp.mean(y, axis=(1, 2))


class HRNetClassifier(nn.Module):
  """HRNet-W`width`-C: the backbone plus the ImageNet classification head;
  (B, H, W, 3) normalised images -> (B, num_classes) float32 logits."""
  width: int = 32
  num_classes: int = 1000
  head_planes: Sequence[int] = HEAD_PLANES
  final_features: int = FINAL_FEATURES
  num_modules: Sequence[int] = NUM_MODULES
  num_blocks: int = NUM_BLOCKS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    xs = HRNet(self.width, self.num_modules, self.num_blocks,
               dtype=self.dtype, name="backbone")(x, train)
    xs = IncreModules(self.head_planes, dtype=self.dtype,
                      name="incre_modules")(xs, train)
    y = imagenet_representation(xs, train, head_planes=self.head_planes,
                                final_features=self.final_features,
                                dtype=self.dtype)
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      param_dtype=jnp.float32, name="classifier")(y)
    return logits.astype(jnp.float32)
