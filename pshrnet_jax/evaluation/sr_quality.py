"""SR quality (paper Table III): PSNR and SSIM of SR outputs vs HR originals.

Two conventions, both per image and averaged over images; the HR original
is the one the student was trained to restore: the HR image resized to the
network size (bilinear, as in training).

- `y` (the headline; the SR literature's convention, e.g. RCAN's and
  BasicSR's evaluation code): the SR
  output clipped to [0, 1] and rounded to 8 bits, as a saved SR image is;
  both images converted to the Y channel of ITU-R BT.601 YCbCr as MATLAB's
  `rgb2ycbcr`, Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in
  [0, 1] (Y in [16, 235], kept in float64: MATLAB rounds Y to integers
  for uint8 input, BasicSR does not); PSNR with a peak of 255; SSIM as
  scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)` (Wang et al. 2004: an
  11 x 11 Gaussian window, K1 = 0.01, K2 = 0.03). No border is cropped: SR
  benchmarks shave `scale` pixels because an up-sampling network has no
  context there, but here the network never up-samples (its input is the LR
  image already resized to the network size) and each query has its own
  factor r in {2, 3, 4} relative to its original, not to the grid the two
  images are compared on, so there is no single scale to shave.
- `rgb` (this project's first figures, kept for comparison): RGB in [0, 1]
  (the SR output clipped, not rounded), scikit-image's defaults (SSIM: 7 x 7
  uniform window, sample covariance), data range 1.

The paper states neither its colour space nor its SSIM window.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from skimage import metrics

from pshrnet_jax.models.inputs import denormalize_images

# ITU-R BT.601 luma for R, G, B in [0, 1] (MATLAB rgb2ycbcr's first row).
Y_OFFSET = 16.0
Y_WEIGHTS = (65.481, 128.553, 24.966)
CONVENTIONS = {
    "y": "Y of ITU-R BT.601 YCbCr (MATLAB rgb2ycbcr, [16, 235]) of the SR "
         "output rounded to 8 bits; PSNR peak 255; SSIM Gaussian window "
         "sigma 1.5 (skimage gaussian_weights, population covariance); no "
         "border crop",
    "rgb": "RGB in [0, 1]; PSNR peak 1; SSIM 7x7 uniform window (skimage "
           "defaults)",
}


@dataclasses.dataclass(frozen=True)
class SRQuality:
  """Mean PSNR (dB) and SSIM over images in each convention (`CONVENTIONS`),
  and how many images."""
  psnr_y: float
  ssim_y: float
  psnr_rgb: float
  ssim_rgb: float
  num_images: int


def _as_unit_rgb(images, name):
  arr = np.asarray(images)
  if arr.ndim != 4 or arr.shape[-1] != 3:
    raise ValueError(f"{name} must be (N, H, W, 3), got shape {arr.shape}")
  return arr.astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)


def luma_bt601(rgb: np.ndarray) -> np.ndarray:
  """Y in [16, 235] (float64) of RGB in [0, 1], (..., 3) -> (...)."""
  rgb = np.asarray(rgb, np.float64)
  return Y_OFFSET + (Y_WEIGHTS[0] * rgb[..., 0] + Y_WEIGHTS[1] * rgb[..., 1]
                     + Y_WEIGHTS[2] * rgb[..., 2])


def psnr_ssim_y(sr_y: np.ndarray, hr_y: np.ndarray) -> tuple[float, float]:
  """PSNR and SSIM of two (H, W) Y images in [16, 235], the `y` convention
  (PSNR inf for identical images)."""
  with np.errstate(divide="ignore"):
    psnr = metrics.peak_signal_noise_ratio(hr_y, sr_y, data_range=255.0)
  ssim = metrics.structural_similarity(
      hr_y, sr_y, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=255.0)
  return float(psnr), float(ssim)


def sr_quality(sr_images: np.ndarray, hr_images: np.ndarray, *,
               sr_normalized: bool = True) -> SRQuality:
  """PSNR and SSIM of SR outputs against their HR originals.

  Args:
    sr_images: (N, H, W, 3) SR outputs: the model's normalised aux['sr'] when
      `sr_normalized`, else RGB float in [0, 1] or uint8.
    hr_images: (N, H, W, 3) HR originals, uint8 or RGB float in [0, 1].
    sr_normalized: whether `sr_images` still need de-normalising.

  Returns:
    SRQuality: per-image means (PSNR inf for an SR image equal to its HR).

  Raises:
    ValueError: shapes differ, are not (N, H, W, 3), or N is 0.
  """
  sr = (denormalize_images(sr_images).astype(np.float64) if sr_normalized
        else _as_unit_rgb(sr_images, "sr_images"))
  hr = _as_unit_rgb(hr_images, "hr_images")
  if sr.shape != hr.shape:
    raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}")
  if sr.shape[0] == 0:
    raise ValueError("no images to compare")
  # The `y` convention scores the SR output as an 8-bit image.
  sr_8bit = np.round(np.clip(sr, 0.0, 1.0) * 255.0) / 255.0
  y = [psnr_ssim_y(luma_bt601(s), luma_bt601(h)) for s, h in zip(sr_8bit, hr)]
  with np.errstate(divide="ignore"):  # Identical images: PSNR is inf.
    psnr = [metrics.peak_signal_noise_ratio(h, s, data_range=1.0)
            for s, h in zip(sr, hr)]
  ssim = [metrics.structural_similarity(h, s, channel_axis=-1, data_range=1.0)
          for s, h in zip(sr, hr)]
  return SRQuality(psnr_y=float(np.mean([p for p, _ in y])),
                   ssim_y=float(np.mean([s for _, s in y])),
                   psnr_rgb=float(np.mean(psnr)), ssim_rgb=float(np.mean(ssim)),
                   num_images=int(sr.shape[0]))


def mean_quality(qualities: Sequence[SRQuality]) -> SRQuality | None:
  """The per-image mean over several SRQuality (e.g. one per batch)."""
  count = sum(q.num_images for q in qualities)
  if not count:
    return None
  fields = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
  return SRQuality(
      **{f: sum(getattr(q, f) * q.num_images for q in qualities) / count
         for f in fields}, num_images=count)
