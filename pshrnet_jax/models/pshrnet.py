"""HRNet-ReID (the teacher / HR model) and PS-HRNet (the student), SPEC 1.4.

Parameter paths: `HRNetReID` holds `backbone` and `incre_modules` with the
same paths as `HRNetClassifier` (so ImageNet weights copy across), and
`head` (`fc1`, `bn`, `fc2`); with the ImageNet representation head (paper
Table VI's HRNet-W32-C row) also `downsamp_modules_0..2` and `final_layer`.
`SRReID` holds `sr` (the SR network) and `reid` (the extractor) for any SR
network and extractor (what `factory.build_student` builds); `PSHRNet`
builds the paper's one (VDSR-CA and an `HRNetReID`) from flat arguments.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import hrnet
from pshrnet_jax.models import reid_head
from pshrnet_jax.models import vdsr_ca

Dtype = Any

SR_MODULES = ("vdsr_ca", "vdsr", "none")
# 'reid': SPEC 1.3's pooled branches (Seq1..Seq5); 'imagenet': HRNet-W*-C's
# own representation head (downsamp_modules, final_layer, 2048-d pool).
HEAD_KINDS = ("reid", "imagenet")


class HRNetReID(nn.Module):
  """HRNet backbone + incre_modules + the ReID head: the teacher model.

  Attributes:
    width: backbone width (32 in the paper).
    num_classes: training identities M (751 is Market-1501's).
    pooling: 'avg', 'max' or 'avgmax' (paper default; Table V ablation).
    head_planes: incre_modules planes (paper: 32/64/128/256; smaller for
      tests and CPU demos).
    dropout_rate: dropout before the identity classifier.
    num_modules: HighResolutionModules of stages 2-4 (HRNet-W*-C: 1, 4, 3).
    num_blocks: blocks of layer1 and of every branch (HRNet-W*-C: 4).
    dtype: computation dtype (parameters stay float32; outputs float32).
    head_kind: 'reid' (SPEC 1.3) or 'imagenet' (HRNet-W*-C's representation
      head, pooled to `final_features`, then the same FC block; its aux has
      seq5 = that pooled vector and no seq1..seq4).
    final_features: final_layer channels of the ImageNet head (2048).
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
    """Runs the ReID model.

    Args:
      x: (B, H, W, 3) ImageNet-normalised images, H and W multiples of 32.
      train: batch statistics + dropout (needs a 'dropout' RNG) or inference.

    Returns:
      (logits, aux): aux holds seq1..seq5 (seq5 only with the ImageNet
      head), l_f, logits and feature (= concat(seq5, l_f), the test-time
      descriptor), all float32.
    """
    if self.pooling not in reid_head.POOLING_MODES:
      raise ValueError(f"pooling must be one of {reid_head.POOLING_MODES}, "
                       f"got {self.pooling!r}")
    if self.head_kind not in HEAD_KINDS:
      raise ValueError(f"head_kind must be one of {HEAD_KINDS}, "
                       f"got {self.head_kind!r}")
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


def PSHRNet(  # pylint: disable=invalid-name
    width: int = 32, num_classes: int = 751, pooling: str = "avgmax",
    sr_module: str = "vdsr_ca", sr_blocks: int = 18, sr_features: int = 64,
    sr_squeeze_channels: int = 4,
    head_planes: Sequence[int] = hrnet.HEAD_PLANES, dropout_rate: float = 0.5,
    num_modules: Sequence[int] = hrnet.NUM_MODULES,
    num_blocks: int = hrnet.NUM_BLOCKS,
    dtype: Dtype = jnp.float32) -> "SRReID":
  """The PS-HRNet student: VDSR-CA followed by HRNet-ReID, as an `SRReID`.

  The paper's model by its name and flat arguments (converted released
  students, and model.json files written before SRReID, describe it so);
  `factory.build_student` builds the same `SRReID` from a config.

  Args:
    width: backbone width.
    num_classes: training identities M.
    pooling: ReID pooling mode.
    sr_module: 'vdsr_ca' (paper), 'vdsr' (no channel attention) or 'none'
      (the input goes straight to the ReID model; aux['sr'] is the input).
    sr_blocks: SR middle blocks (18).
    sr_features: SR channels (64).
    sr_squeeze_channels: channel-attention bottleneck (4).
    head_planes: incre_modules planes.
    dropout_rate: dropout before the identity classifier.
    num_modules: HighResolutionModules of stages 2-4.
    num_blocks: blocks of layer1 and of every branch.
    dtype: computation dtype.
  """
  if sr_module not in SR_MODULES:
    raise ValueError(f"sr_module must be one of {SR_MODULES}, "
                     f"got {sr_module!r}")
  sr = None if sr_module == "none" else vdsr_ca.VDSRCA(
      sr_blocks, sr_features, sr_squeeze_channels,
      channel_attention=sr_module == "vdsr_ca", dtype=dtype)
  reid = HRNetReID(width, num_classes, pooling, head_planes, dropout_rate,
                   num_modules, num_blocks, dtype=dtype)
  return SRReID(reid=reid, sr=sr)


class SRReID(nn.Module):
  """Any student: an SR network (or none) followed by a ReID extractor.

  `factory.build_student` builds every configured student this way; with
  VDSR-CA and HRNetReID it is the paper's PS-HRNet (`PSHRNet` above).

  Attributes:
    reid: the ReID extractor, e.g. HRNetReID or ResNet50ReID; its
      parameters live under `reid`.
    sr: the SR network (VDSRCA, SRCNN, RCAN), under `sr`; None: the input
      (the LR image up-sampled by the input pipeline) goes straight to the
      extractor.
  """
  reid: nn.Module
  sr: Optional[nn.Module] = None

  @property
  def has_sr_network(self) -> bool:
    """Whether there is an SR network to train (L_SR applies)."""
    return self.sr is not None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Restores the LR images, then runs the extractor.

    Args:
      x: (B, H, W, 3) LR images resized to network size, normalised.
      train: training mode (BatchNorm statistics, dropout).

    Returns:
      (logits, aux): the extractor's aux plus 'sr', the SR output (the input
      itself without an SR network).
    """
    sr = x.astype(jnp.float32) if self.sr is None else self.sr(x)
    logits, aux = self.reid(sr, train)
    return logits, {**aux, "sr": sr}
