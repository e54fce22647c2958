"""SRCNN 9-5-5 (Dong et al., TPAMI 2016), paper Table IV's oldest SR module:
conv 9x9 3->64, ReLU, conv 5x5 64->32, ReLU, conv 5x5 32->3, with biases. As
in the PyTorch port yjn870/SRCNN-pytorch (its names and initial weights),
convolutions pad k // 2 so the output keeps the input's size, and there is
no global residual. 69,251 parameters at the default widths.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import layers

Dtype = Any

FEATURES = (64, 32)
KERNEL_SIZES = (9, 5, 5)


class SRCNN(nn.Module):
  """SRCNN on normalised images already at network size (float32 out);
  `features`: the first two convolutions' channels."""
  features: Sequence[int] = FEATURES
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if len(self.features) != 2:
      raise ValueError(f"SRCNN has two hidden layers; features="
                       f"{tuple(self.features)}")
    widths = tuple(self.features) + (x.shape[-1],)
    y = x
    for n, (width, size) in enumerate(zip(widths, KERNEL_SIZES), 1):
      y = layers.conv(width, size, use_bias=True, dtype=self.dtype,
                      name=f"conv{n}",
                      kernel_init=layers.torch_default_kernel_init)(y)
      if n < len(KERNEL_SIZES):
        y = nn.relu(y)
    return y.astype(jnp.float32)
