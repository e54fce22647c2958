"""HRNet-ReID (the teacher) and `SRReID`, any student: with VDSR-CA and
HRNetReID the paper's PS-HRNet (SPEC 1.4). HRNetReID's `backbone` and
`incre_modules` (and with the ImageNet head `downsamp_modules_*`,
`final_layer`) have HRNetClassifier's paths, so ImageNet weights copy across.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import hrnet
from pshrnet_jax.models import reid_head

Dtype = Any


class HRNetReID(nn.Module):
  """HRNet backbone + incre_modules + the ReID head: the teacher model.

  Attributes:
    width: backbone width (32 in the paper).
    num_classes: training identities M (751 is Market-1501's).
    pooling: 'avg', 'max' or 'avgmax' (paper default; Table V ablation).
    head_planes: incre_modules planes (paper: 32/64/128/256).
    dropout_rate: dropout before the identity classifier.
    num_modules, num_blocks: see hrnet.HRNet.
    dtype: computation dtype (parameters and outputs float32).
    head_kind: 'reid' (SPEC 1.3) or 'imagenet' (HRNet-W*-C's representation
      head, `final_features` wide, as seq5, then the same FC block).
  """
  width: int = 32
  num_classes: int = 751
  pooling: str = "avgmax"
  head_planes: Sequence[int] = hrnet.HEAD_PLANES
  dropout_rate: float = 0.5
  num_modules: Sequence[int] = hrnet.NUM_MODULES
  num_blocks: int = hrnet.NUM_BLOCKS
  dtype: Dtype = jnp.float32
  head_kind: str = "reid"
  final_features: int = hrnet.FINAL_FEATURES

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(B, H, W, 3) normalised images (H, W multiples of 32) -> (logits,
    aux); `train` needs a 'dropout' RNG."""
    xs = hrnet.HRNet(self.width, self.num_modules, self.num_blocks,
                     dtype=self.dtype, name="backbone")(x, train)
    xs = hrnet.IncreModules(self.head_planes, dtype=self.dtype,
                            name="incre_modules")(xs, train)
    if self.head_kind == "imagenet":
      pooled = hrnet.imagenet_representation(
          xs, train, head_planes=self.head_planes,
          final_features=self.final_features, dtype=self.dtype)
      return reid_head.PooledHead(
          self.num_classes, dropout_rate=self.dropout_rate, dtype=self.dtype,
          name="head")(pooled, train)
    return reid_head.ReIDHead(
        self.num_classes, pooling=self.pooling,
        dropout_rate=self.dropout_rate, dtype=self.dtype,
        name="head")(xs, train)


class SRReID(nn.Module):
  """Any student: the SR network `sr` (None: the up-sampled LR input goes
  straight on) followed by the ReID extractor `reid`, under those names."""
  reid: nn.Module
  sr: Optional[nn.Module] = None

  @property
  def has_sr_network(self) -> bool:
    """Whether there is an SR network to train (L_SR applies)."""
    return self.sr is not None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Normalised LR images at network size -> (logits, the extractor's aux
    plus 'sr', the SR output or the input itself)."""
    sr = x.astype(jnp.float32) if self.sr is None else self.sr(x)
    logits, aux = self.reid(sr, train)
    return logits, {**aux, "sr": sr}
