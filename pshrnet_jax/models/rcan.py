"""RCAN (Zhang et al., ECCV 2018) for paper Table IV, in the layout of the
authors' code (EDSR-PyTorch `model/rcan.py`):

  head:  conv3x3 3->C
  body:  G residual groups, then conv3x3 C->C; long skip: body + head
  group: B RCABs, then conv3x3 C->C; short skip: + group input
  RCAB:  conv3x3 -> ReLU -> conv3x3 -> channel attention; + block input
  tail:  conv3x3 C->3, no image-level residual

Left out: the up-sampling before the tail (our input is already at network
size) and the MeanShift layers (inputs are already normalised). Every conv
has a bias; weights start from PyTorch's default law, as the authors' code
(HRNet's law would grow the activations ~1.5x per residual block). The
paper's size (G=10, B=20, C=64, r=16) has 15,296,931 parameters here.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import layers
from pshrnet_jax.models.vdsr_ca import ChannelAttention

Dtype = Any

NUM_GROUPS = 10
NUM_BLOCKS = 20
FEATURES = 64
REDUCTION = 16


def _conv(features: int, kernel_size: int, dtype: Dtype,
          name: str) -> nn.Conv:
  return layers.conv(features, kernel_size, use_bias=True, dtype=dtype,
                     name=name, kernel_init=layers.torch_default_kernel_init)


class RCAB(nn.Module):
  """Residual channel attention block (attention squeezed to C // reduction)."""
  reduction: int = REDUCTION
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    y = _conv(features, 3, self.dtype, "conv1")(x)
    y = _conv(features, 3, self.dtype, "conv2")(nn.relu(y))
    y = ChannelAttention(features // self.reduction, dtype=self.dtype,
                         kernel_init=layers.torch_default_kernel_init,
                         name="ca")(y)
    return y + x


class ResidualGroup(nn.Module):
  """`num_blocks` RCABs and a conv3x3, with a skip around them."""
  num_blocks: int = NUM_BLOCKS
  reduction: int = REDUCTION
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    for b in range(self.num_blocks):
      y = RCAB(self.reduction, dtype=self.dtype, name=f"block_{b}")(y)
    return _conv(x.shape[-1], 3, self.dtype, "conv")(y) + x


class RCAN(nn.Module):
  """RCAN without the up-sampling: G `num_groups` of B `num_blocks` RCABs,
  C `features`, reduction r; (B, H, W, C) normalised images -> float32
  restored images of the same shape."""
  num_groups: int = NUM_GROUPS
  num_blocks: int = NUM_BLOCKS
  features: int = FEATURES
  reduction: int = REDUCTION
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_groups < 1 or self.num_blocks < 1 or (
        self.features // self.reduction < 1):
      raise ValueError(
          f"RCAN needs >= 1 group and block and features // reduction >= 1; "
          f"got num_groups={self.num_groups}, num_blocks={self.num_blocks}, "
          f"features={self.features}, reduction={self.reduction}")
    dtype, c = self.dtype, self.features
    head = _conv(c, 3, dtype, "head")(x)
    y = head
    for g in range(self.num_groups):
      y = ResidualGroup(self.num_blocks, self.reduction, dtype=dtype,
                        name=f"group_{g}")(y)
    y = _conv(c, 3, dtype, "body_conv")(y) + head
    return _conv(x.shape[-1], 3, dtype, "tail")(y).astype(jnp.float32)
