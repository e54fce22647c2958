"""Weights in and out: PyTorch checkpoints -> Flax variables (e.g.
`load_torch_hrnet("hrnetv2_w32_imagenet_pretrained.pth")`), subtree copies
between models, and the Orbax folders variables are kept in."""

from pshrnet_jax.convert.pytorch import convert_checkpoint
from pshrnet_jax.convert.pytorch import load_torch_hrnet
from pshrnet_jax.convert.pytorch import load_torch_pshrnet
from pshrnet_jax.convert.pytorch import load_torch_resnet
from pshrnet_jax.convert.transplant import reid_from_imagenet
from pshrnet_jax.convert.transplant import student_from_teacher
from pshrnet_jax.convert.variables_io import fingerprint
from pshrnet_jax.convert.variables_io import restore_variables
from pshrnet_jax.convert.variables_io import save_variables
from pshrnet_jax.errors import ConversionError

__all__ = ["ConversionError", "convert_checkpoint", "fingerprint",
           "load_torch_hrnet",
           "load_torch_pshrnet", "load_torch_resnet", "reid_from_imagenet",
           "restore_variables", "save_variables", "student_from_teacher"]
