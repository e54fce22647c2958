"""SR quality (paper Table III): PSNR and SSIM of SR output vs HR originals.

Per image, on RGB in [0, 1] (the SR output de-normalised and clipped, the
uint8 HR divided by 255), with scikit-image's defaults (SSIM: 7x7 uniform
window), averaged over images. The paper states neither its colour space nor
its SSIM window; this is our documented choice.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from skimage import metrics

from pshrnet_jax.models.inputs import denormalize_images


@dataclasses.dataclass(frozen=True)
class SRQuality:
  """Mean PSNR (dB) and SSIM over images, and how many images."""
  psnr: float
  ssim: float
  num_images: int


def _as_unit_rgb(images, name):
  arr = np.asarray(images)
  if arr.ndim != 4 or arr.shape[-1] != 3:
    raise ValueError(f"{name} must be (N, H, W, 3), got shape {arr.shape}")
  return arr.astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)


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
  with np.errstate(divide="ignore"):  # Identical images: PSNR is inf.
    psnr = [metrics.peak_signal_noise_ratio(h, s, data_range=1.0)
            for s, h in zip(sr, hr)]
  ssim = [metrics.structural_similarity(h, s, channel_axis=-1, data_range=1.0)
          for s, h in zip(sr, hr)]
  return SRQuality(psnr=float(np.mean(psnr)), ssim=float(np.mean(ssim)),
                   num_images=int(sr.shape[0]))


def mean_quality(qualities: Sequence[SRQuality]) -> SRQuality | None:
  """The per-image mean over several SRQuality (e.g. one per batch)."""
  count = sum(q.num_images for q in qualities)
  if not count:
    return None
  return SRQuality(
      psnr=sum(q.psnr * q.num_images for q in qualities) / count,
      ssim=sum(q.ssim * q.num_images for q in qualities) / count,
      num_images=count)
