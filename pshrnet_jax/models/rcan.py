"""RCAN (Zhang et al., "Image Super-Resolution Using Very Deep Residual
Channel Attention Networks", ECCV 2018), for paper Table IV.

Layout of the authors' code (EDSR-PyTorch `model/rcan.py`), without its
up-sampling tail because our input is already resized to the network size:

  head:  conv3x3 3->C
  body:  G residual groups, then conv3x3 C->C; long skip: body + head
  group: B RCABs, then conv3x3 C->C; short skip: + group input
  RCAB:  conv3x3 -> ReLU -> conv3x3 -> channel attention; + block input
  CA:    global average pool -> conv1x1 C->C/r -> ReLU -> conv1x1 C/r->C
         -> sigmoid -> scale (the same layer as VDSR-CA's)
  tail:  conv3x3 C->3 (the x2/x3/x4 `Upsampler` before it is left out)

All convolutions have a bias. The MeanShift layers of the original are left
out (inputs are already ImageNet-normalised), and, as in the original, the
output is the tail's prediction with no image-level residual. Weights start
from PyTorch's default law (what the authors' code trains from); with
HRNet's kaiming-normal law the 200 residual blocks would grow the
activations ~1.5x each. Biases start at zero.

Sizes: the paper's RCAN (G=10, B=20, C=64, r=16) has 15,296,931 parameters
here (the x2 model's up-sampler adds 147,712) and about 20x the
convolutions of VDSR-CA at the same map size; depth and width are
configurable (`config.model.rcan_groups`, `rcan_blocks`, `sr_features`,
`rcan_reduction`) for tests and small machines.

Flax names: `head`, `group_G/block_B/{conv1,conv2,ca/{squeeze,excite}}`,
`group_G/conv`, `body_conv`, `tail` (original: `head.0`,
`body.G.body.B.body.{0,2}`, `body.G.body.B.body.3.conv_du.{0,2}`,
`body.G.body.B`, `body.G`, `tail`).
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
  """Residual channel attention block.

  Attributes:
    reduction: channel-attention reduction r (squeeze to C // r).
    dtype: computation dtype.
  """
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
  """B RCABs and a conv3x3, with a skip around them.

  Attributes:
    num_blocks: RCABs B.
    reduction: channel-attention reduction r.
    dtype: computation dtype.
  """
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
  """RCAN without the up-sampling tail (input already at network size).

  Attributes:
    num_groups: residual groups G (paper: 10).
    num_blocks: RCABs per group B (paper: 20).
    features: channels C (paper: 64).
    reduction: channel-attention reduction r (paper: 16).
    dtype: computation dtype; the output is float32.
  """
  num_groups: int = NUM_GROUPS
  num_blocks: int = NUM_BLOCKS
  features: int = FEATURES
  reduction: int = REDUCTION
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Restores a batch.

    Args:
      x: (B, H, W, C) normalised images.

    Returns:
      (B, H, W, C) float32: the restored images (normalised space).
    """
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
