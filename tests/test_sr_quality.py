"""SR quality in both conventions (evaluation/sr_quality.py): hand-computed
cases, and scikit-image given the same, exactly defined images.

Tolerances come from float64 arithmetic. Y values lie in [16, 235], so two
orders of evaluating the same Y formula differ by a few ulps (< 1e-13);
skimage's variances are E[x^2] - E[x]^2 with E[x^2] <= 235^2 = 55225, a few
ulps of which (~1e-11) over SSIM's C2 = (0.03 * 255)^2 = 58.5 move SSIM by
< 1e-12 relative. 1e-9 leaves a margin of 1000 over both.
"""

import math

import numpy as np
import pytest
from skimage import metrics

from pshrnet_jax.evaluation import sr_quality
from pshrnet_jax.models.inputs import IMAGENET_MEAN, IMAGENET_STD

TOL = 1e-9
C1_Y, C1_RGB = (0.01 * 255) ** 2, 0.01 ** 2  # SSIM's (K1 L)^2


def _constant(value, shape=(1, 16, 16, 3)):
  return np.full(shape, value, np.uint8)


def test_bt601_luma_is_matlabs():
  # MATLAB rgb2ycbcr: black -> 16, white -> 235, pure R/G/B -> 16 + weight.
  rgb = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
                 np.float64)
  np.testing.assert_allclose(sr_quality.luma_bt601(rgb),
                             [16, 235, 81.481, 144.553, 40.966], rtol=1e-15)


def test_constant_images_by_hand():
  hr, sr = _constant(100), _constant(110)
  q = sr_quality.sr_quality(sr, hr, sr_normalized=False)
  # Y = 16 + 219 v / 255 (the weights sum to 219): the two differ by 2190/255.
  y_hr, y_sr = 16 + 219 * 100 / 255, 16 + 219 * 110 / 255
  assert q.psnr_y == pytest.approx(20 * math.log10(255 / (2190 / 255)),
                                   abs=TOL)
  # Constant images: no variance, SSIM is the luminance term alone.
  assert q.ssim_y == pytest.approx(
      (2 * y_hr * y_sr + C1_Y) / (y_hr ** 2 + y_sr ** 2 + C1_Y), rel=TOL)
  m_hr, m_sr = 100 / 255, 110 / 255
  assert q.psnr_rgb == pytest.approx(20 * math.log10(25.5), abs=TOL)
  assert q.ssim_rgb == pytest.approx(
      (2 * m_hr * m_sr + C1_RGB) / (m_hr ** 2 + m_sr ** 2 + C1_RGB), rel=TOL)
  assert q.num_images == 1


def _pair():
  """An exactly defined uint8 HR image with structure, and a perturbed SR."""
  i, j, c = np.meshgrid(np.arange(32), np.arange(24), np.arange(3),
                        indexing="ij")
  hr = ((3 * i + 5 * j + 40 * c + (i * j) % 17) % 256).astype(np.uint8)
  sr = np.clip(hr.astype(int) + (i + 2 * j + c) % 7 - 3, 0, 255).astype(
      np.uint8)
  return hr, sr


def test_against_skimage_on_a_known_pair():
  hr, sr = _pair()
  q = sr_quality.sr_quality(sr[None], hr[None], sr_normalized=False)

  def luma(x):  # The formula, written out here.
    x = x.astype(np.float64) / 255
    return 16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]

  y_hr, y_sr = luma(hr), luma(sr)
  assert q.psnr_y == pytest.approx(metrics.peak_signal_noise_ratio(
      y_hr, y_sr, data_range=255), abs=TOL)
  expected_ssim = metrics.structural_similarity(
      y_hr, y_sr, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=255)
  assert q.ssim_y == pytest.approx(expected_ssim, abs=TOL)
  assert 0.5 < q.ssim_y < 0.999  # A pair that tests something.
  # The RGB pair: skimage's defaults on RGB in [0, 1], as before.
  assert q.psnr_rgb == pytest.approx(metrics.peak_signal_noise_ratio(
      hr / 255, sr / 255, data_range=1.0), abs=TOL)
  assert q.ssim_rgb == pytest.approx(metrics.structural_similarity(
      hr / 255, sr / 255, channel_axis=-1, data_range=1.0), abs=TOL)


def test_identical_images():
  hr, _ = _pair()
  q = sr_quality.sr_quality(hr[None], hr[None], sr_normalized=False)
  assert (q.ssim_y, q.ssim_rgb) == (1.0, 1.0)
  assert q.psnr_y == q.psnr_rgb == math.inf


def _normalise(rgb):
  return ((rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(
      np.float32)


def test_normalised_sr_is_scored_as_an_8_bit_image_in_y():
  hr, sr = _pair()
  # A quarter level above each 8-bit level: float32 normalising moves it by
  # ~1e-7, far from the rounding boundary, so Y scores `sr` itself.
  q = sr_quality.sr_quality(_normalise((sr + 0.25) / 255)[None], hr[None])
  exact = sr_quality.sr_quality(sr[None], hr[None], sr_normalized=False)
  assert (q.psnr_y, q.ssim_y) == (exact.psnr_y, exact.ssim_y)
  # RGB scores the unrounded output, clipped to [0, 1]. The float32 round
  # trip moves each value by < 1e-6, the MSE (~1e-4) by < 1e-7 relative
  # to... well under 1e-3 dB.
  shifted = np.minimum((sr + 0.25) / 255, 1.0)
  assert q.psnr_rgb == pytest.approx(metrics.peak_signal_noise_ratio(
      hr / 255, shifted, data_range=1.0), abs=1e-3)
  assert q.psnr_rgb != pytest.approx(exact.psnr_rgb, abs=1e-3)


def test_means_over_batches_and_bad_shapes():
  hr, sr = _pair()
  one = sr_quality.sr_quality(sr[None], hr[None], sr_normalized=False)
  two = sr_quality.sr_quality(hr[None], hr[None] // 2, sr_normalized=False)
  both = sr_quality.sr_quality(np.stack([sr, hr]), np.stack([hr, hr // 2]),
                               sr_normalized=False)
  mean = sr_quality.mean_quality([one, two])
  for field in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
    assert getattr(mean, field) == pytest.approx(getattr(both, field),
                                                 rel=1e-15)
  assert mean.num_images == 2
  assert sr_quality.mean_quality([]) is None
  with pytest.raises(ValueError, match="shapes differ"):
    sr_quality.sr_quality(hr[None], np.stack([hr, hr]), sr_normalized=False)
