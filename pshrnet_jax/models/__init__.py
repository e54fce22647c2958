"""Flax networks of PS-HRNet: HRNet, its ImageNet classifier, VDSR-CA, the
HRNet-ReID teacher and the PS-HRNet student."""

from pshrnet_jax.models.hrnet import HRNet
from pshrnet_jax.models.hrnet import HRNetClassifier
from pshrnet_jax.models.pshrnet import HRNetReID
from pshrnet_jax.models.pshrnet import PSHRNet
from pshrnet_jax.models.vdsr_ca import VDSRCA

__all__ = ["HRNet", "HRNetClassifier", "HRNetReID", "PSHRNet", "VDSRCA"]
