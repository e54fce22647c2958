"""The paper's ablations end to end on the tiny synthetic set: training and
evaluation for every new extractor, SR module and head.

Table IV's rows (SR modules in front of a ResNet-50 extractor):

- resnet50 + srcnn: phase 1, phase 2 and evaluation in one workdir (the
  table's pseudo-siamese extra row);
- resnet50 + rcan: phase 2 alone, no teacher and no L_PS (the paper's rows:
  joint SR + ID), then evaluation;
- resnet50 + bicubic: phase 2 against srcnn's teacher, then evaluation.

Table III's Solo SR row (VDSR-CA trained by L_SR alone, no teacher) is the
same kind of run on the HRNet student.

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

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import metrics as skmetrics

import tiny_setup as tiny
from pshrnet_jax import convert
from pshrnet_jax import driver
from pshrnet_jax.models import factory

ONE_EPOCH = {"train.phase1_epochs": 1, "optim.epochs": 1}
RESNET = {"model.backbone": "resnet50"}
SOLO_SR = {"loss.id_weight": 0, "loss.ps_weight": 0}
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
  for name, overrides in (
      ("rcan", dict(RESNET, **{"model.sr_module": "rcan",
                               "loss.ps_weight": 0})),
      ("bicubic", dict(RESNET, teacher_dir=teacher,
                       **{"model.sr_module": "bicubic"})),
      ("solo_sr", SOLO_SR)):
    workdir = str(base / name)
    phase2 = _run(tiny_source, workdir, build, mode="phase2", **overrides)
    out[name] = _run(tiny_source, workdir, build, mode="eval", **overrides)
    out[name]["log"] = phase2["log"] + out[name]["log"]
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
  # One representation sequence: the triplet sums over seq5 alone, and
  # the paper's L_PS set {seq1, seq4, seq5, l_c} becomes {seq5, l_c}.
  phase1 = _logged_terms(runs["srcnn"]["log"], "phase1")
  assert {"triplet_seq5", "ce", "loss"} <= phase1
  assert not {"triplet_seq1", "triplet_seq4"} & phase1
  for name in ("srcnn", "rcan", "bicubic"):
    phase2 = _logged_terms(runs[name]["log"], "phase2")
    assert {"triplet_seq5", "ce"} <= phase2, name
    assert not {"ps_seq1", "ps_seq4", "triplet_seq1"} & phase2, name
    results = runs[name]["results"]
    assert results["model"] == "student"
    assert results["sr"]["num_images"] == results["num_queries"] > 0
  for name in ("srcnn", "bicubic"):  # With the teacher and L_PS.
    assert {"ps_seq5", "ps_logits"} <= _logged_terms(runs[name]["log"],
                                                     "phase2"), name
    assert set(runs[name]["results"]["models"]) == {"student", "teacher"}
  # Table IV's joint SR + ID: phase 2 alone, no teacher read or evaluated.
  assert "ps" not in _logged_terms(runs["rcan"]["log"], "phase2")
  assert set(runs["rcan"]["results"]["models"]) == {"student"}
  assert not os.path.exists(os.path.join(runs["rcan"]["workdir"], "phase1"))
  # 'bicubic' evaluated srcnn's teacher on LR queries up-sampled otherwise.
  teacher_results = {name: runs[name]["results"]["models"]["teacher"]
                     for name in ("srcnn", "bicubic")}
  assert teacher_results["bicubic"]["mAP"] != teacher_results["srcnn"]["mAP"]


def test_solo_sr_trains_vdsr_ca_alone(runs):
  run = runs["solo_sr"]
  # No L_ID (CE, triplets) and no L_PS: the loss is 0.5 * L_SR.
  assert _logged_terms(run["log"], "phase2") == {"loss", "sr", "grad_norm"}
  assert set(run["results"]["models"]) == {"student"}
  assert run["results"]["sr"]["num_images"] == run["results"]["num_queries"]
  config = run["config"]
  start = tiny.init_variables(factory.build_student(
      config.model, tiny.NUM_TRAIN_IDS), config.seed)["params"]
  end = _params(run["workdir"], "phase2", "student")
  # The extractor got no gradient: SGD moved it by weight decay alone,
  # through momentum, which scales every parameter by the same factor c
  # (float32 over 24 steps: a few 1e-6 relative).
  pairs = [(np.asarray(a).ravel(), np.asarray(b).ravel()) for a, b in zip(
      jax.tree.leaves(start["reid"]), jax.tree.leaves(end["reid"]))]
  ratios = np.concatenate([b[np.abs(a) > 1e-3] / a[np.abs(a) > 1e-3]
                           for a, b in pairs])
  c = float(np.median(ratios))
  assert 0.9 < c < 1.0 - 1e-4  # Decayed, by weight decay only.
  np.testing.assert_allclose(ratios, c, rtol=2e-5)
  # VDSR-CA trained: its parameters moved by far more than decay.
  sr_moved = [np.max(np.abs(np.asarray(b) - c * np.asarray(a)))
              for a, b in zip(jax.tree.leaves(start["sr"]),
                              jax.tree.leaves(end["sr"]))]
  assert max(sr_moved) > 1e-3


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
  np.testing.assert_allclose(sr["psnr_rgb"], psnr, atol=2e-3)
  np.testing.assert_allclose(sr["ssim_rgb"], ssim, atol=2e-4)
  # Bilinear (what 'none' uses by default) would score differently.
  height, width = tiny.IMAGE_SIZE
  bilinear = quality(lambda p: np.asarray(Image.open(p).convert("RGB").resize(
      (width, height), Image.Resampling.BILINEAR)))[0]
  assert abs(bilinear - psnr) > 0.05
