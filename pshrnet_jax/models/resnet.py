"""ResNet-50 in torchvision's layout, for paper Table IV's extractor.

torchvision `resnet50` (v1.5: the stride of a down-sampling Bottleneck is on
its 3x3 convolution, as in `layers.Bottleneck`): conv1 7x7/2 -> bn1 -> ReLU
-> max-pool 3x3/2 (pad 1) -> layer1..layer4 of 3, 4, 6, 3 Bottlenecks
(planes 64, 128, 256, 512; layers 2-4 start with stride 2) -> global average
pool (2048-d) -> fc. Flax names mirror torchvision's keys so the conversion
table is a rename (`pshrnet_jax.convert.key_tables.RESNET`):

  conv1, bn1                       -> backbone/conv1, backbone/bn1
  layerL.K.{conv,bn}{1,2,3}        -> backbone/layerL_K/{conv,bn}{1,2,3}
  layerL.K.downsample.{0,1}        -> backbone/layerL_K/downsample_{conv,bn}
  fc                               -> fc

`ResNet50Classifier` reproduces torchvision's logits from its state dict;
`ResNet50ReID` is the ReID extractor: the same backbone, global average
pooling, and HRNet-ReID's FC block (reid_head.PooledHead). Its aux holds
`seq5` (the pooled 2048-d vector, the only representation sequence: the
triplet loss sums over it alone and the pseudo-siamese loss can compare it),
`l_f`, `logits`, `feature` = concat(seq5, l_f) (2560-d, the test-time
descriptor).

`width` (64) and `blocks` (3, 4, 6, 3) are configurable so tests can build a
narrow, shallow network with the same layout; ImageNet weights need the
defaults.
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


def output_features(width: int = WIDTH) -> int:
  """Channels of layer4 (2048 for ResNet-50): 4 * 8 * width."""
  return layers.Bottleneck.expansion * 8 * width


class ResNet(nn.Module):
  """The Bottleneck ResNet backbone, stem to layer4.

  Attributes:
    width: stem channels and layer1's planes (64); layer L has
      width * 2**(L-1) planes.
    blocks: Bottlenecks of layer1..layer4 (ResNet-50: 3, 4, 6, 3).
    dtype: computation dtype (parameters stay float32).
  """
  width: int = WIDTH
  blocks: Sequence[int] = RESNET50_BLOCKS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Runs the backbone.

    Args:
      x: (B, H, W, 3) ImageNet-normalised images.
      train: batch statistics and their update (True) or running averages.

    Returns:
      The layer4 map, (B, ~H/32, ~W/32, 32 * width).
    """
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
  """torchvision's `resnet50`: backbone, global average pool, fc.

  Attributes:
    num_classes: fc outputs (ImageNet: 1000).
    width: see ResNet (64).
    blocks: see ResNet ((3, 4, 6, 3)).
    dtype: computation dtype (parameters stay float32).
  """
  num_classes: int = 1000
  width: int = WIDTH
  blocks: Sequence[int] = RESNET50_BLOCKS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Classifies NHWC, ImageNet-normalised images.

    Args:
      x: (B, H, W, 3).
      train: batch statistics (True) or running averages (False).

    Returns:
      (B, num_classes) float32 logits.
    """
    y = ResNet(self.width, self.blocks, dtype=self.dtype,
               name="backbone")(x, train)
    y = jnp.mean(y, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      param_dtype=jnp.float32, name="fc")(y)
    return logits.astype(jnp.float32)


class ResNet50ReID(nn.Module):
  """The ResNet-50 ReID extractor: backbone, global average pool, FC block.

  Attributes:
    num_classes: training identities M.
    width: see ResNet (64).
    blocks: see ResNet ((3, 4, 6, 3)).
    dropout_rate: dropout before the identity classifier.
    dtype: computation dtype (parameters stay float32; outputs float32).
  """
  num_classes: int = 751
  width: int = WIDTH
  blocks: Sequence[int] = RESNET50_BLOCKS
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the ReID model.

    Args:
      x: (B, H, W, 3) ImageNet-normalised images, H and W multiples of 32.
      train: batch statistics + dropout (needs a 'dropout' RNG) or inference.

    Returns:
      (logits, aux): aux holds seq5 (the pooled layer4, 2048-d), l_f,
      logits and feature (= concat(seq5, l_f)), all float32.
    """
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
