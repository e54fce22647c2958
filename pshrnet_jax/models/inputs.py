"""The models' input convention: RGB, NHWC, float32, ImageNet-normalised.

Every network here takes images normalised with ImageNet's mean and standard
deviation (as the PyTorch weights they load expect); pipelines hand over
uint8 images and the jitted steps and feature functions normalise on device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NETWORK_SIZE = (256, 128)  # (height, width) of the paper's input


def normalize_images(images: jax.Array) -> jax.Array:
  """uint8 RGB (..., H, W, 3) -> float32 ImageNet-normalised."""
  x = jnp.asarray(images).astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def denormalize_images(x: np.ndarray) -> np.ndarray:
  """ImageNet-normalised float -> RGB float32 in [0, 1] (clipped)."""
  x = np.asarray(x, dtype=np.float32)
  rgb = x * np.asarray(IMAGENET_STD, np.float32) + np.asarray(
      IMAGENET_MEAN, np.float32)
  return np.clip(rgb, 0.0, 1.0)
