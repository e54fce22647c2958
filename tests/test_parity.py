"""Numerical parity with PyTorch: weights go through the converters.

The PyTorch references (reference/torch_models.py) get random weights and
random BatchNorm statistics/affines; their state dicts are converted with
`load_torch_hrnet` / `convert_checkpoint`, so these tests prove both the
Flax modules and the conversion. Eval mode; max relative error
max|jax - torch| / max|torch| < 1e-4.
"""

import copy

import jax
import numpy as np
import pytest
import torch

from pshrnet_jax import convert
from pshrnet_jax.convert import load_torch_hrnet
from pshrnet_jax.models import HRNetClassifier

from reference import torch_models as tr

# One thread: with two, torch spin-waits against XLA and the other jobs on
# this 2-core machine (measured 10 s instead of 0.08 s per tiny forward).
torch.set_num_threads(1)
TOL = 1e-4
# LLVM optimisation level 0 cuts XLA:CPU compile time ~3x here (28 s -> 8 s
# for a tiny HRNet) at no cost to these single forwards.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
TINY_CLS = dict(width=4, num_classes=10, head_planes=(4, 8, 8, 16),
                final_features=32)
TINY_SR = dict(num_blocks=3, features=16, squeeze=4)


def _images(shape, seed=0):
  return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _rel_err(got, want) -> float:
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def _forward(module):
  return jax.jit(lambda v, x: module.apply(v, x, train=False),
                 compiler_options=FAST_COMPILE)


@pytest.fixture(scope="module")
def tiny_classifier():
  torch_model = tr.randomize(tr.HighResolutionNet(**TINY_CLS), seed=3)
  variables, module, info = convert.convert_checkpoint(
      tr.state_dict_numpy(torch_model))
  kwargs = info["model_kwargs"]
  assert info["model"] == "HRNetClassifier"
  assert {k: kwargs[k] for k in ("width", "num_classes", "head_planes",
                                 "final_features")} == {
      "width": 4, "num_classes": 10, "head_planes": [4, 8, 8, 16],
      "final_features": 32}
  return torch_model, variables, _forward(module)


@pytest.mark.parametrize("height,width", [(256, 128), (160, 96)])
def test_tiny_classifier_parity(tiny_classifier, height, width):
  torch_model, variables, forward = tiny_classifier
  x = _images((2, 3, height, width))
  with torch.no_grad():
    want = torch_model(torch.from_numpy(x)).numpy()
  got = forward(variables, x.transpose(0, 2, 3, 1))
  assert got.shape == (2, 10)
  assert _rel_err(got, want) < TOL


def test_full_hrnet_w32_c_parity():
  """`load_torch_hrnet` on a randomised W32-C, at 224x224 (batch 1)."""
  torch_model = tr.randomize(tr.HighResolutionNet(width=32, num_classes=1000),
                             seed=4)
  variables = load_torch_hrnet(tr.state_dict_numpy(torch_model), width=32)
  x = _images((1, 3, 224, 224), seed=5)
  with torch.no_grad():
    want = torch_model(torch.from_numpy(x)).numpy()
  del torch_model
  module = HRNetClassifier(width=32, num_classes=1000)
  got = _forward(module)(variables, x.transpose(0, 2, 3, 1))
  assert got.shape == (1, 1000)
  assert _rel_err(got, want) < TOL


@pytest.fixture(scope="module")
def tiny_student():
  sr = tr.VDSR(**TINY_SR)
  torch_model = tr.randomize(tr.HighResolutionNet(
      width=4, num_classes=7, head_planes=(4, 8, 8, 16), final_features=32,
      reid=True, sr=sr), seed=6)
  state = tr.state_dict_numpy(torch_model)
  variables, module, info = convert.convert_checkpoint(state, "student")
  sr = info["model_kwargs"]["sr"]
  assert (info["model"], sr["model"]) == ("SRReID", "VDSRCA")
  assert (sr["model_kwargs"]["channel_attention"], sr["model_kwargs"]["num_blocks"],
          sr["model_kwargs"]["features"],
          sr["model_kwargs"]["squeeze_channels"]) == (True, 3, 16, 4)
  # The released models keep the unused ImageNet head: skipped, and listed.
  assert {k.split(".")[0] for k in info["ignored_keys"]} == {
      "downsamp_modules", "final_layer"}
  return torch_model, state, variables, _forward(module)


@pytest.mark.parametrize("height,width", [(256, 128), (96, 64)])
def test_student_parity(tiny_student, height, width):
  torch_model, _, variables, forward = tiny_student
  x = _images((2, 3, height, width), seed=7)
  with torch.no_grad():
    want = {k: v.numpy() for k, v in torch_model(torch.from_numpy(x)).items()}
  logits, aux = forward(variables, x.transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(logits, aux["logits"])
  for name in ("seq1", "seq2", "seq3", "seq4", "seq5", "l_f", "logits"):
    assert aux[name].shape == want[name].shape, name
    assert _rel_err(aux[name], want[name]) < TOL, name
  assert _rel_err(aux["sr"], want["sr"].transpose(0, 2, 3, 1)) < TOL
  np.testing.assert_allclose(
      aux["feature"], np.concatenate([want["seq5"], want["l_f"]], axis=1),
      rtol=1e-4, atol=1e-4 * np.abs(want["seq5"]).max())


def test_teacher_conversion_is_the_students_reid_part(tiny_student):
  _, state, student_vars, _ = tiny_student
  teacher_state = {k: v for k, v in state.items() if not k.startswith("vdsr.")}
  teacher = convert.load_torch_pshrnet(teacher_state, kind="teacher")
  for collection in ("params", "batch_stats"):
    assert jax.tree.all(jax.tree.map(
        np.array_equal, teacher[collection], student_vars[collection]["reid"]))


def test_train_mode_batch_statistics_and_momentum(tiny_classifier):
  """Train-mode BN: batch statistics, momentum 0.1 and the unbiased update.

  Normalising by batch statistics of small maps amplifies float32 rounding
  (PyTorch float32 is itself 2e-5 off its float64 result at this size, and
  1e-3 off at 2x64x32), so the reference here is PyTorch in float64.
  """
  torch_model, variables, _ = tiny_classifier
  torch_model = copy.deepcopy(torch_model).double().train()
  x = _images((4, 3, 128, 64), seed=8)
  with torch.no_grad():
    want = torch_model(torch.from_numpy(x).double()).numpy()
  module = HRNetClassifier(**TINY_CLS)
  step = jax.jit(lambda v, x: module.apply(v, x, train=True,
                                           mutable=["batch_stats"]),
                 compiler_options=FAST_COMPILE)
  got, updated = step(variables, x.transpose(0, 2, 3, 1))
  assert _rel_err(got, want) < TOL
  want_stats = load_torch_hrnet(tr.state_dict_numpy(torch_model))["batch_stats"]
  errors = jax.tree.map(_rel_err, updated["batch_stats"], want_stats)
  assert max(jax.tree.leaves(errors)) < 1e-5
  # The update moved the statistics (so the comparison above is not vacuous).
  moved = jax.tree.map(_rel_err, variables["batch_stats"], want_stats)
  assert min(jax.tree.leaves(moved)) > 1e-3
