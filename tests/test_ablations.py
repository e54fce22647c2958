"""The paper's ablations end to end on the tiny synthetic set: training and
evaluation for every new extractor, SR module and head.

Table IV's rows (SR modules in front of a ResNet-50 extractor) share one
phase-1 teacher, as they would in a real ablation:

- resnet50 + srcnn: phase 1, phase 2 and evaluation in one workdir;
- resnet50 + rcan and resnet50 + bicubic: phase 2 against that teacher,
  then evaluation.

Table VI's reference row (HRNet-W32-C with its ImageNet representation
head) is an HR-only run as in the paper: phase 1 and evaluation on HR
queries (its student, SR network in front, is built and traced in
test_models.py; the phase-2 step is the same code as resnet50's).

Each run is one epoch per phase at tiny sizes (tests/tiny_setup.py) and the
runs share one data build, so the cost is the new compiled programs. The
checks read what could be wrong: the trained layouts, the loss terms each
phase logged (the triplet over seq5 alone for single-sequence extractors,
L_PS on {seq5, l_c}, no L_SR without an SR network), and for 'bicubic' the
LR images actually used (training cache and the SR quality of evaluation,
recomputed here with PIL bicubic).
"""

import glob
import os

import numpy as np
import pytest
from PIL import Image
from skimage import metrics as skmetrics

import tiny_setup as tiny
from pshrnet_jax import convert
from pshrnet_jax import driver

ONE_EPOCH = {"train.phase1_epochs": 1, "optim.epochs": 1}
RESNET = {"model.backbone": "resnet50"}
HRNET_IMAGENET_HEAD = {"model.head": "imagenet", "hr_only": True,
                       "data.name": "market1501"}


def _run(source, workdir, build_dir, **overrides):
  config = tiny.config_with(source, **ONE_EPOCH, **overrides,
                            **{"data.build_dir": build_dir})
  if config.hr_only:  # As configs/hr_market1501.py: nothing is down-sampled.
    with config.unlocked():
      del config.data.options.factors
  with tiny.capture_logs() as logs:
    results = driver.run(config, workdir)
  return {"workdir": workdir, "results": results, "log": logs.messages,
          "config": config}


@pytest.fixture(scope="module")
def runs(tiny_source, tmp_path_factory):
  base = tmp_path_factory.mktemp("ablations")
  build = str(base / "data")
  out = {"srcnn": _run(tiny_source, str(base / "srcnn"), build,
                       **RESNET, **{"model.sr_module": "srcnn"})}
  teacher = os.path.join(out["srcnn"]["workdir"], "phase1", "teacher")
  for sr_module in ("rcan", "bicubic"):
    workdir = str(base / sr_module)
    overrides = dict(RESNET, teacher_dir=teacher,
                     **{"model.sr_module": sr_module})
    phase2 = _run(tiny_source, workdir, build, mode="phase2", **overrides)
    out[sr_module] = _run(tiny_source, workdir, build, mode="eval",
                          **overrides)
    out[sr_module]["log"] = phase2["log"] + out[sr_module]["log"]
  out["imagenet_head"] = _run(tiny_source, str(base / "imagenet_head"),
                              build, **HRNET_IMAGENET_HEAD)
  return out


def _logged_terms(log, phase):
  """The metric names of a phase's last progress line."""
  lines = [m for m in log if m.startswith(f"{phase} step ")]
  assert lines, f"no {phase} progress line"
  tokens = lines[-1].split(" | ")[1].split()
  return set(tokens[::2])


def _params(workdir, phase, name):
  return convert.restore_variables(os.path.join(workdir, phase, name))[
      "params"]


def test_resnet50_teacher_and_students(runs):
  teacher = _params(runs["srcnn"]["workdir"], "phase1", "teacher")
  assert set(teacher) == {"backbone", "head"}
  assert set(teacher["backbone"]) == {
      "conv1", "bn1", "layer1_0", "layer2_0", "layer3_0", "layer4_0"}
  # The pooled layer4 (32 x width 4) feeds the FC block.
  assert teacher["head"]["fc1"]["kernel"].shape == (128, 512)
  srcnn = _params(runs["srcnn"]["workdir"], "phase2", "student")
  assert set(srcnn) == {"sr", "reid"}
  assert {k: v["kernel"].shape for k, v in srcnn["sr"].items()} == {
      "conv1": (9, 9, 3, 8), "conv2": (5, 5, 8, 4), "conv3": (5, 5, 4, 3)}
  rcan = _params(runs["rcan"]["workdir"], "phase2", "student")
  assert set(rcan["sr"]) == {"head", "group_0", "body_conv", "tail"}
  assert set(rcan["sr"]["group_0"]["block_0"]["ca"]) == {"squeeze", "excite"}
  for name in ("srcnn", "rcan", "bicubic"):
    log = runs[name]["log"]
    # One representation sequence: the triplet sums over seq5 alone, and
    # the paper's L_PS set {seq1, seq4, seq5, l_c} becomes {seq5, l_c}.
    phase1 = _logged_terms(runs["srcnn"]["log"], "phase1")
    assert {"triplet_seq5", "ce", "loss"} <= phase1
    assert not {"triplet_seq1", "triplet_seq4"} & phase1
    phase2 = _logged_terms(log, "phase2")
    assert {"ps_seq5", "ps_logits", "triplet_seq5"} <= phase2, name
    assert not {"ps_seq1", "ps_seq4", "triplet_seq1"} & phase2, name
    results = runs[name]["results"]
    assert results["model"] == "student"
    assert set(results["models"]) == {"student", "teacher"}
    assert results["sr"]["num_images"] == results["num_queries"] > 0
  # The later rows evaluated the first row's teacher: on the same LR
  # queries the same numbers; 'bicubic' up-samples them differently.
  teacher_results = {name: runs[name]["results"]["models"]["teacher"]
                     for name in ("srcnn", "rcan", "bicubic")}
  assert teacher_results["rcan"] == teacher_results["srcnn"]
  assert teacher_results["bicubic"]["mAP"] != teacher_results["srcnn"]["mAP"]


def test_hrnet_imagenet_head(runs):
  run = runs["imagenet_head"]
  teacher = _params(run["workdir"], "phase1", "teacher")
  assert set(teacher) == {"backbone", "incre_modules", "downsamp_modules_0",
                          "downsamp_modules_1", "downsamp_modules_2",
                          "final_layer", "head"}
  # final_layer's 2048 channels, globally pooled, feed the FC block.
  assert teacher["final_layer"]["conv"]["kernel"].shape == (1, 1, 128, 2048)
  assert teacher["head"]["fc1"]["kernel"].shape == (2048, 512)
  phase1 = _logged_terms(run["log"], "phase1")
  assert "triplet_seq5" in phase1 and "triplet_seq1" not in phase1
  # HR-only (Table VI): no phase 2; the teacher is evaluated on HR queries.
  assert not os.path.exists(os.path.join(run["workdir"], "phase2"))
  results = run["results"]
  assert set(results["models"]) == {"teacher"} and "sr" not in results
  assert results["num_queries"] == runs["srcnn"]["results"]["num_queries"]


def _bicubic(path):
  height, width = tiny.IMAGE_SIZE
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB").resize(
        (width, height), Image.Resampling.BICUBIC))


def test_bicubic_is_up_sampling_only(runs):
  run = runs["bicubic"]
  student = _params(run["workdir"], "phase2", "student")
  assert set(student) == {"reid"}  # No SR network...
  phase2 = _logged_terms(run["log"], "phase2")
  assert "sr" not in phase2 and "ps" in phase2  # ... and no L_SR.
  bench = driver.load_benchmark(run["config"], run["workdir"])

  # Training: the cached LR images are PIL bicubic up-samplings.
  caches = [np.load(f, mmap_mode="r") for f in glob.glob(os.path.join(
      run["config"].data.build_dir, "image_cache", "images_*.npy"))]
  pairs = [c for c in caches if c.shape[:2] == (2, len(bench.train))]
  bicubic = np.stack([_bicubic(r.lr_path) for r in bench.train])
  assert any(np.array_equal(c[1], bicubic) for c in pairs)

  # Evaluation: the "SR output" scored is the bicubic up-sampling.
  def quality(upsample):
    psnr, ssim = [], []
    for r in bench.query:
      hr = np.asarray(Image.open(r.hr_path).convert("RGB")) / 255.0
      sr = upsample(r.lr_path) / 255.0
      psnr.append(skmetrics.peak_signal_noise_ratio(hr, sr, data_range=1.0))
      ssim.append(skmetrics.structural_similarity(hr, sr, channel_axis=-1,
                                                  data_range=1.0))
    return np.mean(psnr), np.mean(ssim)

  psnr, ssim = quality(_bicubic)
  sr = run["results"]["sr"]
  np.testing.assert_allclose(sr["psnr"], psnr, atol=2e-3)
  np.testing.assert_allclose(sr["ssim"], ssim, atol=2e-4)
  # Bilinear (what 'none' uses by default) would score differently.
  height, width = tiny.IMAGE_SIZE
  bilinear = quality(lambda p: np.asarray(Image.open(p).convert("RGB").resize(
      (width, height), Image.Resampling.BILINEAR)))[0]
  assert abs(bilinear - psnr) > 0.05
