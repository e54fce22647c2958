"""torchvision's ResNet-50 (v1.5: stride on the 3x3 convolution), for paper
Table IV's extractor. Flax names mirror torchvision's keys
(`convert.key_tables.RESNET`). `ResNet50ReID` puts HRNet-ReID's FC block
(reid_head.PooledHead) on the pooled 2048-d layer4, its only sequence seq5.
`width` and `blocks` shrink it for tests; ImageNet weights need the defaults.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import layers
from pshrnet_jax.models import reid_head

Dtype = Any

RESNET50_BLOCKS = (3, 4, 6, 3)
WIDTH = 64
# The stem's 7x7/2 convolution and 3x3/2 max-pool, then three stride-2 layers.
INPUT_MULTIPLE = 32


class ResNet(nn.Module):
  """The Bottleneck ResNet backbone, stem to layer4: layer L has
  width * 2**(L-1) planes and blocks[L-1] Bottlenecks."""
  width: int = WIDTH
  blocks: Sequence[int] = RESNET50_BLOCKS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """(B, H, W, 3) normalised images -> (B, ~H/32, ~W/32, 32 * width)."""
    if len(self.blocks) != 4 or min(self.blocks) < 1:
      raise ValueError(f"ResNet needs 4 layers of >= 1 block; got "
                       f"blocks={tuple(self.blocks)}")
    dtype = self.dtype
    x = layers.conv(self.width, 7, 2, dtype=dtype, name="conv1")(x)
    x = nn.relu(layers.batch_norm(train, dtype=dtype, name="bn1")(x))
    # Padding with -inf, as torch's MaxPool2d (the input is >= 0 anyway).
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for layer, num_blocks in enumerate(self.blocks, start=1):
      planes = self.width * 2**(layer - 1)
      for k in range(num_blocks):
        stride = 2 if layer > 1 and k == 0 else 1
        x = layers.Bottleneck(planes, stride, dtype=dtype,
                              name=f"layer{layer}_{k}")(x, train)
    return x


class ResNet50Classifier(nn.Module):
  """torchvision's `resnet50`: backbone, global average pool, fc; (B, H, W,
  3) normalised images -> (B, num_classes) float32 logits."""
  num_classes: int = 1000
  width: int = WIDTH
  blocks: Sequence[int] = RESNET50_BLOCKS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = ResNet(self.width, self.blocks, dtype=self.dtype,
               name="backbone")(x, train)
    y = jnp.mean(y, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      param_dtype=jnp.float32, name="fc")(y)
    return logits.astype(jnp.float32)


class ResNet50ReID(nn.Module):
  """The ResNet-50 ReID extractor: backbone, global average pool, FC block."""
  num_classes: int = 751
  width: int = WIDTH
  blocks: Sequence[int] = RESNET50_BLOCKS
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(B, H, W, 3) normalised images (H, W multiples of 32) -> (logits,
    aux: seq5, l_f, logits, feature); `train` needs a 'dropout' RNG."""
    if x.ndim != 4 or x.shape[1] % INPUT_MULTIPLE or x.shape[2] % INPUT_MULTIPLE:
      raise ValueError(
          f"ResNet50ReID expects (B, H, W, C) images with H and W multiples "
          f"of {INPUT_MULTIPLE}, got shape {x.shape}")
    y = ResNet(self.width, self.blocks, dtype=self.dtype,
               name="backbone")(x, train)
    pooled = jnp.mean(y.astype(jnp.float32), axis=(1, 2))
    return reid_head.PooledHead(self.num_classes,
                                dropout_rate=self.dropout_rate,
                                dtype=self.dtype, name="head")(pooled, train)
