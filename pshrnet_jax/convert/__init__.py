"""Weights in and out: PyTorch checkpoints -> Flax variables, and the Orbax
folders variables are kept in.

    from pshrnet_jax.convert import load_torch_hrnet, restore_variables
    variables = load_torch_hrnet("hrnetv2_w32_imagenet_pretrained.pth")
    variables = load_torch_resnet("resnet50-0676ba61.pth")  # torchvision

| module | what it holds |
|---|---|
| `torch_io` | reading `.pth` files (zip and legacy) without torch |
| `torch_pickle` | the restricted unpickler: never imports or calls what a file names |
| `key_tables` | PyTorch key templates -> Flax paths, per layer kind |
| `pytorch` | state dict -> Flax variables with strict key and shape checks |
| `transplant` | ImageNet -> ReID and teacher -> student subtree copies |
| `variables_io` | `save_variables` / `restore_variables` (Orbax folders) |
"""

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
