"""SRCNN (Dong et al., "Image Super-Resolution Using Deep Convolutional
Networks", TPAMI 2016), paper Table IV's oldest SR module.

The 9-5-5 network on an image already up-sampled to the network size:
conv 9x9 3->64 + ReLU (patch extraction), conv 5x5 64->32 + ReLU
(non-linear mapping), conv 5x5 32->3 (reconstruction), all with bias. As in
the common PyTorch port (yjn870/SRCNN-pytorch), every convolution pads k // 2
so the output has the input's size (the paper's valid convolutions shrink it
by 16 pixels), and there is no global residual: SRCNN predicts the image
itself. Names `conv1`..`conv3` are that port's. Weights start from PyTorch's
default law (the port's), biases at zero.

Parameters at the default widths: 15,616 + 51,232 + 2,403 = 69,251.
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
  """SRCNN on an image already resized to the network size.

  Attributes:
    features: channels of the first two convolutions (paper: 64, 32; tests
      use fewer).
    dtype: computation dtype; the output is float32.
  """
  features: Sequence[int] = FEATURES
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Restores a batch.

    Args:
      x: (B, H, W, C) normalised images.

    Returns:
      (B, H, W, C) float32: the restored images (normalised space).
    """
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
