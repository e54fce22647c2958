"""VDSR with channel attention (VDSR-CA, SPEC 1.1), and plain VDSR.

Names follow the released PyTorch module: `input`, `residual_layer.N.conv`,
`residual_layer.N.ca.module.1` / `.3` (the squeeze / excite 1x1 convs),
`output`; here `input`, `block_N_conv`, `block_N_ca/{squeeze,excite}`,
`output`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import layers

Dtype = Any


class ChannelAttention(nn.Module):
  """RCAN channel attention: x * sigmoid(W2 relu(W1 avgpool(x) + b1) + b2),
  W1 squeezing to `squeeze_channels` (`config.model.ca_reduction`: the
  paper's r = 4 read as RCAN's ratio, 64 -> 16; the released code's
  64 -> 4, r = 16)."""
  squeeze_channels: int = 4
  dtype: Dtype = jnp.float32
  kernel_init: Callable[..., jax.Array] = layers.conv_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.mean(x, axis=(1, 2), keepdims=True)
    y = layers.conv(self.squeeze_channels, 1, use_bias=True,
                    dtype=self.dtype, name="squeeze",
                    kernel_init=self.kernel_init)(y)
    y = layers.conv(x.shape[-1], 1, use_bias=True, dtype=self.dtype,
                    name="excite", kernel_init=self.kernel_init)(nn.relu(y))
    return x * nn.sigmoid(y)


class VDSRCA(nn.Module):
  """VDSR-CA on normalised images already at network size: the input plus
  a float32 residual prediction; `channel_attention=False` is plain VDSR."""
  num_blocks: int = 18
  features: int = 64
  squeeze_channels: int = 4
  channel_attention: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.relu(layers.conv(self.features, 3, dtype=self.dtype,
                            name="input")(x))
    for n in range(self.num_blocks):
      y = layers.conv(self.features, 3, dtype=self.dtype,
                      name=f"block_{n}_conv")(y)
      if self.channel_attention:
        y = ChannelAttention(self.squeeze_channels, dtype=self.dtype,
                             name=f"block_{n}_ca")(y)
      y = nn.relu(y)
    y = layers.conv(x.shape[-1], 3, dtype=self.dtype, name="output")(y)
    return (y + x).astype(jnp.float32)
