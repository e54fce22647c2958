"""Flax networks of PS-HRNet: HRNet, its ImageNet classifier, VDSR-CA, the
HRNet-ReID teacher and the student (`SRReID`: an SR network, then an
extractor), and the paper's ablation networks (ResNet-50, SRCNN, RCAN).
`factory` builds them from a config."""

from pshrnet_jax.models.hrnet import HRNet
from pshrnet_jax.models.hrnet import HRNetClassifier
from pshrnet_jax.models.pshrnet import HRNetReID
from pshrnet_jax.models.pshrnet import SRReID
from pshrnet_jax.models.rcan import RCAN
from pshrnet_jax.models.resnet import ResNet50Classifier
from pshrnet_jax.models.resnet import ResNet50ReID
from pshrnet_jax.models.srcnn import SRCNN
from pshrnet_jax.models.vdsr_ca import VDSRCA

__all__ = ["HRNet", "HRNetClassifier", "HRNetReID", "RCAN",
           "ResNet50Classifier", "ResNet50ReID", "SRCNN", "SRReID", "VDSRCA"]
