"""Reports and SR quality: JSON values, Markdown, PNG sizes and frame colours."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from skimage import metrics

from pshrnet_jax import evaluation

from pshrnet_jax.evaluation import reports, sr_quality
from pshrnet_jax.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from pshrnet_jax.evaluation import plots


def _result():
  cmc = np.array([0.5, 0.75, 0.75, 1, 1, 1, 1, 1, 1, 1], np.float32)
  factor = evaluation.RankResult(
      cmc=np.ones(10, np.float32), mAP=0.9, mINP=0.8, num_valid_queries=2,
      num_queries=2, protocol="single_shot", ap_convention="torchreid")
  trials = evaluation.TrialStats(
      cmc=np.stack([cmc - 0.25 * (np.arange(10) == 0), cmc + 0.25 *
                    (np.arange(10) == 0)]),
      mAP=np.array([0.5, 0.7]), mINP=np.array([0.4, 0.4]),
      num_valid_queries=np.array([4, 4]))
  return evaluation.RankResult(
      cmc=cmc, mAP=0.6, mINP=0.4, num_valid_queries=4, num_queries=4,
      protocol="single_shot", ap_convention="torchreid", trials=trials,
      per_factor={2: factor})


def test_results_json_and_markdown(tmp_path):
  sr = sr_quality.SRQuality(psnr=26.1234, ssim=0.91234, num_images=3)
  returned, markdown = reports.write_results(str(tmp_path), _result(),
                                             dataset="mlr_viper", sr=sr)
  with open(tmp_path / "results.json") as f:
    data = json.load(f)
  assert returned == data
  assert (data["rank1"], data["rank5"], data["rank10"]) == (50.0, 100.0, 100.0)
  assert (data["mAP"], data["mINP"]) == (60.0, 40.0)
  assert data["protocol"] == "single_shot"
  assert data["ap_convention"] == "torchreid"
  assert data["single_shot"]["rank1_std"] == 25.0  # Trials at 25% and 75%.
  assert data["single_shot"]["mAP_std"] == 10.0
  assert data["per_factor"]["2"]["rank1"] == 100.0
  assert data["sr"] == {"psnr": 26.123, "ssim": 0.9123, "num_images": 3}
  with open(tmp_path / "results.md") as f:
    text = f.read()
  assert markdown == text
  assert "| all | 50.00 ± 25.00 | 100.00 ± 0.00 | 100.00 ± 0.00 | " \
         "60.00 ± 10.00 | 40.00 | 4/4 |" in text
  assert "| LR x2 | 100.00 |" in text
  assert "| SR vs HR | 26.12 | 0.9123 | 3 |" in text


def test_cmc_png_size(tmp_path):
  path = plots.plot_cmc(str(tmp_path / "cmc.png"), {"a": _result()},
                          max_rank=10)
  with Image.open(path) as img:
    assert img.size == (600, 400)


def test_ranked_list_frames(tmp_path):
  rng = np.random.default_rng(0)
  queries = [rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
             for _ in range(2)]
  srs = [rng.random((32, 16, 3)) for _ in range(2)]
  gallery = [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)
             for _ in range(6)]
  distances = rng.random((2, 6))
  indices, correct = plots.ranked_matches(
      distances, np.array([1, 2]), np.array([1, 2, 1, 3, 2, 1]),
      np.array([0, 0]), np.array([1, 1, 0, 1, 1, 1]), top_k=4)
  assert 2 not in indices[0]  # Same id and camera as query 0: skipped.
  path = str(tmp_path / "ranked.png")
  size = plots.save_ranked_list(path, queries, gallery, indices, correct,
                                  sr_images=srs, cell_size=(32, 16), border=3,
                                  gap=5)
  with Image.open(path) as img:
    pixels = np.asarray(img.convert("RGB"))
  # 6 columns of 16+6 wide with 5 gaps; 2 rows of 32+6 high, header 16.
  assert size == (5 + 6 * 27, 16 + 5 + 2 * 43) == pixels.shape[1::-1]
  for r in range(2):
    for k in range(4):
      y, x = plots.ranked_list_box_origin(r, 2 + k, cell_size=(32, 16),
                                            border=3, gap=5)
      colour = plots.CORRECT_COLOR if correct[r, k] else plots.WRONG_COLOR
      assert tuple(pixels[y, x]) == colour
      assert tuple(pixels[y + 37, x + 21]) == colour  # Bottom-right corner.
    y, x = plots.ranked_list_box_origin(r, 0, cell_size=(32, 16), border=3,
                                          gap=5)
    assert tuple(pixels[y + 1, x + 1]) == plots.QUERY_COLOR
  assert correct.any() and not correct.all()


def test_psnr_of_constant_offset_is_hand_computed():
  hr = np.full((2, 8, 8, 3), 100, np.uint8)
  sr = hr / 255.0 + 0.1  # MSE 0.01 on a [0, 1] range: PSNR = 20 dB.
  quality = sr_quality.sr_quality(sr, hr, sr_normalized=False)
  assert quality.psnr == pytest.approx(20.0, abs=1e-9)
  assert quality.num_images == 2


def test_ssim_matches_skimage_on_normalised_sr():
  rng = np.random.default_rng(0)
  hr = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  rgb = np.clip(hr / 255.0 + rng.normal(0, 0.05, hr.shape), 0, 1)
  normalised = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
  quality = sr_quality.sr_quality(normalised.astype(np.float32), hr)
  rgb32 = rgb.astype(np.float32).astype(np.float64)
  expected_ssim = np.mean([metrics.structural_similarity(
      h / 255.0, s, channel_axis=-1, data_range=1.0) for h, s in zip(hr, rgb)])
  assert quality.ssim == pytest.approx(expected_ssim, abs=1e-5)
  mse = np.mean((hr / 255.0 - rgb32) ** 2, axis=(1, 2, 3))
  assert quality.psnr == pytest.approx(np.mean(-10 * np.log10(mse)),
                                       abs=1e-3)
  assert math.isclose(sr_quality.sr_quality(hr, hr, sr_normalized=False).ssim,
                      1.0)
  with pytest.raises(ValueError, match="shapes differ"):
    sr_quality.sr_quality(hr[:1], hr, sr_normalized=False)
