"""Reports: JSON values, Markdown, PNG sizes and frame colours (SR quality's
figures: test_sr_quality.py)."""

import json

import numpy as np
from PIL import Image

from pshrnet_jax import evaluation

from pshrnet_jax.evaluation import reports, sr_quality
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
  sr = sr_quality.SRQuality(psnr_y=26.1234, ssim_y=0.91234, psnr_rgb=24.5678,
                            ssim_rgb=0.85678, num_images=3)
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
  assert data["sr"] == {"psnr_y": 26.123, "ssim_y": 0.9123,
                        "psnr_rgb": 24.568, "ssim_rgb": 0.8568,
                        "num_images": 3,
                        "conventions": sr_quality.CONVENTIONS}
  with open(tmp_path / "results.md") as f:
    text = f.read()
  assert markdown == text
  assert "| all | 50.00 ± 25.00 | 100.00 ± 0.00 | 100.00 ± 0.00 | " \
         "60.00 ± 10.00 | 40.00 | 4/4 |" in text
  assert "| LR x2 | 100.00 |" in text
  assert "| Y (BT.601), Gaussian SSIM | 26.12 | 0.9123 | 3 |" in text
  assert "| RGB [0, 1], 7x7 uniform SSIM | 24.57 | 0.8568 | 3 |" in text


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
