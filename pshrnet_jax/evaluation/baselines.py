"""Matchers that learn nothing, on the same queries as the model.

A trained model is worth what it adds over these. Each turns the network-size
uint8 input the model sees into an L2-normalised vector (ranked by cosine):
`pixels` (24 x 8 area-resized), `histogram` (joint colour histogram, 8 bins
per channel over -2..2 standard deviations, Hellinger-embedded), and both on
the centre crop (`_centre`: the middle 60%, the torso). Each channel is first
standardised per image, which removes a camera's colour cast and gain (raw
histograms of the demo set rank below chance).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from PIL import Image

PIXEL_SIZE = (24, 8)  # (height, width)
HISTOGRAM_BINS = 8
CENTRE_FRACTION = 0.6
_EPS = 1e-12


def centre_crop(images: np.ndarray,
                fraction: float = CENTRE_FRACTION) -> np.ndarray:
  """The middle `fraction` of height and width of (N, H, W, C) images."""
  _, height, width, _ = images.shape
  h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
  top, left = (height - h) // 2, (width - w) // 2
  return images[:, top:top + h, left:left + w]


def _l2(vectors: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return (vectors / np.maximum(norms, _EPS)).astype(np.float32)


def standardised_pixels(images: np.ndarray,
                        size: tuple[int, int] = PIXEL_SIZE) -> np.ndarray:
  """(N, H, W, 3) uint8 -> (N, h*w*3) L2-normalised standardised pixels."""
  small = np.stack([
      np.asarray(Image.fromarray(image).resize((size[1], size[0]),
                                               Image.BOX), np.float64)
      for image in images])
  mean = small.mean(axis=(1, 2), keepdims=True)
  std = small.std(axis=(1, 2), keepdims=True)
  return _l2(((small - mean) / np.maximum(std, 1e-6)).reshape(len(small), -1))


def colour_histogram(images: np.ndarray,
                     bins: int = HISTOGRAM_BINS) -> np.ndarray:
  """(N, H, W, 3) uint8 -> (N, bins**3) Hellinger-embedded histograms of
  the channel-standardised images."""
  x = images.astype(np.float64)
  mean = x.mean(axis=(1, 2), keepdims=True)
  std = np.maximum(x.std(axis=(1, 2), keepdims=True), 1e-6)
  z = np.clip((x - mean) / std, -2.0, 2.0 - 1e-9)
  index = ((z + 2.0) * (bins / 4.0)).astype(np.int64)  # bin per channel
  flat = (index[..., 0] * bins + index[..., 1]) * bins + index[..., 2]
  counts = np.stack([np.bincount(f.ravel(), minlength=bins**3)
                     for f in flat]).astype(np.float64)
  counts /= np.maximum(counts.sum(axis=1, keepdims=True), _EPS)
  return _l2(np.sqrt(counts))


BASELINES: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {
    "pixels": standardised_pixels,
    "pixels_centre": lambda x: standardised_pixels(centre_crop(x)),
    "histogram": colour_histogram,
    "histogram_centre": lambda x: colour_histogram(centre_crop(x)),
}


def baseline_features(name: str, images: np.ndarray) -> np.ndarray:
  """The features of baseline `name` for (N, H, W, 3) uint8 images."""
  if name not in BASELINES:
    raise ValueError(f"unknown baseline {name!r}; expected one of "
                     f"{sorted(BASELINES)}")
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"baselines take uint8 (N, H, W, 3) images, got "
                     f"{images.dtype} {images.shape}")
  return BASELINES[name](images)
