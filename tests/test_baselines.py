"""The matchers that learn nothing, on hand-made images."""

import numpy as np
import pytest

from pshrnet_jax.evaluation import baselines


def test_centre_crop_keeps_the_middle_sixty_percent():
  images = np.arange(10 * 5, dtype=np.uint8).reshape(1, 10, 5, 1)
  crop = baselines.centre_crop(images)
  # 60% of 10 rows is 6 (rows 2..7), of 5 columns 3 (columns 1..3).
  np.testing.assert_array_equal(crop[0, :, :, 0], images[0, 2:8, 1:4, 0])


def test_standardised_pixels_by_hand():
  # A 24 x 8 image (no resize): red 0 on the top half and 255 below, green
  # and blue flat. Standardised: red -1 / +1, green and blue 0.
  image = np.zeros((1, 24, 8, 3), np.uint8)
  image[0, 12:, :, 0] = 255
  image[0, :, :, 1] = 90
  vector = baselines.standardised_pixels(image)[0].reshape(24, 8, 3)
  expected = np.zeros((24, 8, 3))
  expected[:12, :, 0], expected[12:, :, 0] = -1.0, 1.0
  expected /= np.sqrt(24 * 8)  # L2-normalised: 192 entries of magnitude 1.
  np.testing.assert_allclose(vector, expected, atol=1e-6)


def test_a_global_colour_cast_changes_neither_baseline():
  rng = np.random.default_rng(0)
  image = rng.integers(40, 200, (1, 48, 16, 3)).astype(np.float64)
  cast = np.clip(image * [1.2, 0.9, 0.8] + [10, -5, 0], 0, 255)
  a, b = image.astype(np.uint8), np.round(cast).astype(np.uint8)
  for name in ("pixels", "pixels_centre"):
    fa, fb = (baselines.baseline_features(name, x) for x in (a, b))
    assert float((fa @ fb.T)[0, 0]) > 0.999, name  # Cosine, up to rounding.


def test_colour_histogram_by_hand():
  # Four pixels per channel at -1.5, -0.5, 0.5, 1.5 standard deviations
  # (values 0, 1, 2, 3 scaled): 8 bins over [-2, 2] put them in bins
  # 1, 3, 4, 6. All three channels equal, so each pixel has one joint bin.
  values = np.array([0, 1, 2, 3], np.float64)
  z = (values - values.mean()) / values.std()  # -1.342, -0.447, 0.447, 1.342
  bins = ((z + 2.0) * 2.0).astype(int)
  assert list(bins) == [1, 3, 4, 6]
  image = np.repeat((values * 60 + 20).astype(np.uint8)[None, :, None],
                    3, axis=2).reshape(1, 2, 2, 3)
  vector = baselines.colour_histogram(image)[0]
  expected = np.zeros(8**3)
  for b in bins:
    expected[(b * 8 + b) * 8 + b] = np.sqrt(0.25)
  np.testing.assert_allclose(vector, expected / np.linalg.norm(expected),
                             atol=1e-6)


def test_histogram_ignores_layout_and_pixels_do_not():
  # Red above blue vs blue above red: the same histogram, opposite pixels.
  top_red = np.zeros((1, 24, 8, 3), np.uint8)
  top_red[0, :12, :, 0] = 200
  top_red[0, 12:, :, 2] = 200
  top_blue = top_red[:, ::-1]
  hist = [baselines.baseline_features("histogram", x)
          for x in (top_red, top_blue)]
  pix = [baselines.baseline_features("pixels", x) for x in (top_red, top_blue)]
  assert float((hist[0] @ hist[1].T)[0, 0]) == pytest.approx(1.0)
  assert float((pix[0] @ pix[1].T)[0, 0]) == pytest.approx(-1.0)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="unknown baseline 'sift'"):
    baselines.baseline_features("sift", np.zeros((1, 8, 4, 3), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    baselines.baseline_features("pixels", np.zeros((1, 8, 4, 3)))


def test_gallery_draws_are_one_where_there_is_one_image_per_identity():
  from pshrnet_jax.evaluation import workdir_eval  # pylint: disable=g-import-not-at-top
  assert workdir_eval.gallery_draws("single_shot", np.array([3, 1, 2]),
                                    10)[0] == 1
  draws, info = workdir_eval.gallery_draws("single_shot",
                                           np.array([3, 1, 1, 2]), 10)
  assert draws == 10 and info["draws"] == 10
  assert workdir_eval.gallery_draws("multi_shot", np.array([1, 2]),
                                    10)[1]["draws"] is None
