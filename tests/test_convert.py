"""Conversion of PyTorch checkpoints: formats, prefixes, and every bad input.

No model compute here (parity lives in test_parity.py): these tests check
that the same weights land in the same places whatever the wrapping, and
that each kind of wrong checkpoint gives one error naming key and shapes.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from pshrnet_jax import convert

from reference import torch_models as tr
from pshrnet_jax import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, "-m", "pshrnet_jax.convert"]
TINY = dict(width=4, num_classes=10, head_planes=(4, 8, 8, 16),
            final_features=32)


@pytest.fixture(scope="module")
def tiny():
  """A tiny randomised HRNet-W4-C: torch module, state dict, conversion."""
  model = tr.randomize(tr.HighResolutionNet(**TINY), seed=11)
  state = tr.state_dict_numpy(model)
  return model, state, convert.load_torch_hrnet(state)


def _same(a, b) -> bool:
  return (jax.tree.structure(a) == jax.tree.structure(b)
          and jax.tree.all(jax.tree.map(np.array_equal, a, b)))


def test_leaf_transforms(tiny):
  _, state, variables = tiny
  np.testing.assert_array_equal(variables["params"]["backbone"]["conv1"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["classifier"]["kernel"],
                                state["classifier.weight"].T)
  fuse_bn = "stage4.2.fuse_layers.3.0.2.1"
  stats = variables["batch_stats"]["backbone"]["stage4_2"]["fuse_3_0_2"]["bn"]
  np.testing.assert_array_equal(stats["mean"], state[fuse_bn + ".running_mean"])
  np.testing.assert_array_equal(stats["var"], state[fuse_bn + ".running_var"])
  bn = variables["params"]["backbone"]["stage4_2"]["fuse_3_0_2"]["bn"]
  np.testing.assert_array_equal(bn["scale"], state[fuse_bn + ".weight"])
  np.testing.assert_array_equal(bn["bias"], state[fuse_bn + ".bias"])


@pytest.mark.parametrize("zip_format", [True, False])
def test_pth_files_zip_and_legacy(tiny, tmp_path, zip_format):
  model, _, variables = tiny
  path = tmp_path / "hrnet.pth"
  torch.save(model.state_dict(), path,
             _use_new_zipfile_serialization=zip_format)
  assert _same(convert.load_torch_hrnet(path, width=4), variables)


def test_wrappers_prefixes_and_torch_tensors(tiny):
  model, state, variables = tiny
  # DataParallel + a training-script wrapper + torch tensors, with
  # num_batches_tracked (as timm and the official checkpoints carry).
  wrapped = {"epoch": 3, "state_dict": {"module." + k: v
                                        for k, v in model.state_dict().items()}}
  assert any(k.endswith("num_batches_tracked") for k in wrapped["state_dict"])
  assert _same(convert.load_torch_hrnet(wrapped), variables)
  prefixed = {"model." + k: v for k, v in state.items()}
  _, _, info = convert.convert_checkpoint(prefixed)
  assert info["prefixes"]["HRNet backbone"] == "model."
  assert _same(convert.load_torch_hrnet(prefixed), variables)


def _error(state, match, **kwargs):
  with pytest.raises(errors.ConversionError, match=match):
    convert.convert_checkpoint(state, **kwargs)


def test_width_mismatch_names_both_widths(tiny):
  _error(tiny[1], r"looks like HRNet-W4, expected W32.*transition1\.0\.0\.weight"
         r".*\(4, 256, 3, 3\)", width=32)


def test_missing_key(tiny):
  state = dict(tiny[1])
  del state["stage3.1.branches.2.3.bn2.running_var"]
  _error(state, r"missing key 'stage3\.1\.branches\.2\.3\.bn2\.running_var' "
         r"for Flax batch_stats/backbone/stage3_1/branch2_3/bn2/var \(16,\)")


def test_unexpected_key(tiny):
  state = dict(tiny[1], **{"stage2.0.branches.0.0.extra.weight": np.zeros(3)})
  _error(state, r"unexpected key 'stage2\.0\.branches\.0\.0\.extra\.weight' \(3,\)")
  # A well-formed name the model does not have: a fifth layer1 block.
  state = dict(tiny[1], **{"layer1.4.conv1.weight": np.zeros((64, 256, 1, 1))})
  _error(state, r"unexpected key 'layer1\.4\.conv1\.weight'.*layer1_4/conv1/kernel")


def test_wrong_shape_names_key_and_both_shapes(tiny):
  state = dict(tiny[1], **{"layer1.0.conv2.weight": np.zeros((64, 64, 1, 1))})
  _error(state, r"'layer1\.0\.conv2\.weight' has shape \(64, 64, 1, 1\) but "
         r"HRNetClassifier expects \(64, 64, 3, 3\)")


def test_other_architecture():
  state = tr.state_dict_numpy(tr.SmallCNN())
  _error(state, r"does not look like a checkpoint with a HRNet backbone: no "
         r"key ending in 'layer1\.0\.conv1\.weight' \(first keys: "
         r"\['features\.0\.weight'")


def test_released_models_are_routed_to_the_right_loader(tiny):
  student = tr.randomize(tr.HighResolutionNet(
      width=4, num_classes=7, head_planes=(4, 8, 8, 16), final_features=32,
      reid=True, sr=tr.VDSR(num_blocks=2, features=8, squeeze=2)))
  state = tr.state_dict_numpy(student)
  _error(state, "load_torch_pshrnet")
  _error(state, r"has an SR network \(vdsr\.residual_layer", kind="teacher")
  teacher = {k: v for k, v in state.items() if not k.startswith("vdsr.")}
  _error(teacher, r"no SR network.*kind='teacher'", kind="student")
  _error(tiny[1], r"no key ending in 'add_block\.0\.weight'", kind="teacher")
  # Plain VDSR (no channel attention) is recognised from the keys.
  plain = tr.HighResolutionNet(width=4, num_classes=7, head_planes=(4, 8, 8, 16),
                               final_features=32, reid=True,
                               sr=tr.VDSR(2, 8, attention=False))
  _, module, info = convert.convert_checkpoint(tr.state_dict_numpy(plain),
                                               "student", pooling="max")
  sr = info["model_kwargs"]["sr"]["model_kwargs"]
  assert (info["model"], sr["channel_attention"], sr["num_blocks"]) == (
      "SRReID", False, 2)
  assert not module.sr.channel_attention and module.sr.num_blocks == 2
  assert module.reid.pooling == "max"


def test_unreadable_files(tmp_path, tiny):
  with pytest.raises(FileNotFoundError):
    convert.load_torch_hrnet(tmp_path / "nope.pth")
  path = tmp_path / "hrnet.pth"
  torch.save(tiny[0].state_dict(), path)
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(path.read_bytes()[:5000])
  with pytest.raises(errors.TorchFileError, match="truncated.pth"):
    convert.load_torch_hrnet(truncated)


def _run_script(*args):
  # As README shows it: `python -m pshrnet_jax.convert` from the clone.
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([*COMMAND, *args], capture_output=True, cwd=REPO,
                        text=True, env=env, timeout=300)


def test_script_writes_orbax_and_json(tiny, tmp_path):
  path, out = tmp_path / "hrnet.pth", tmp_path / "converted"
  torch.save(tiny[0].state_dict(), path)
  out.mkdir()
  (out / "old.txt").write_text("an earlier conversion")
  # --overwrite replaces a non-empty folder as a whole (refused without it:
  # test_script_failure_writes_nothing).
  result = _run_script(f"--input={path}", f"--output={out}", "--width=4",
                       "--overwrite")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(out)) == ["conversion.json", "variables"]
  assert sorted(os.listdir(tmp_path)) == ["converted", "hrnet.pth"]
  info = json.loads((out / "conversion.json").read_text())
  assert info["model"] == "HRNetClassifier"
  assert info["model_kwargs"]["width"] == 4
  assert info["num_params"] == sum(
      v.size for k, v in tiny[1].items()
      if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
  assert _same(convert.restore_variables(out), tiny[2])


def test_script_failure_writes_nothing(tmp_path):
  bad, out = tmp_path / "cnn.pth", tmp_path / "converted"
  torch.save(tr.SmallCNN().state_dict(), bad)
  result = _run_script(f"--input={bad}", f"--output={out}")
  assert result.returncode == 1
  assert "layer1.0.conv1.weight" in result.stderr and "cnn.pth" in result.stderr
  assert not out.exists()
  assert sorted(os.listdir(tmp_path)) == ["cnn.pth"]  # No temporary left.
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  result = _run_script(f"--input={bad}", f"--output={out}")
  assert result.returncode == 1 and "refusing to overwrite" in result.stderr
  assert os.listdir(out) == ["keep.txt"]


def test_save_variables_refuses_non_empty_dir(tmp_path, tiny):
  (tmp_path / "x").write_text("")
  with pytest.raises(FileExistsError, match="not an empty directory"):
    convert.save_variables(tiny[2], tmp_path)


# --- The released VDSR-CA layout against --config.model.ca_reduction -------

def test_released_attention_layout_converts_and_names_its_knob():
  # The released layout squeezes 64 -> 4 (ca_reduction 16); at this tiny
  # width, 16 -> 1. Conversion reads the layout from the weights (and
  # HRNet's full depth, which the released weights have).
  import tiny_setup  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.models import factory  # pylint: disable=g-import-not-at-top
  student = tr.randomize(tr.HighResolutionNet(
      width=4, num_classes=tiny_setup.NUM_TRAIN_IDS, head_planes=(4, 8, 16, 32),
      final_features=32, reid=True,
      sr=tr.VDSR(num_blocks=2, features=16, squeeze=1)), seed=3)
  variables, module, info = convert.convert_checkpoint(
      tr.state_dict_numpy(student), "student")
  assert info["model_kwargs"]["sr"]["model_kwargs"]["squeeze_channels"] == 1
  assert module.sr.squeeze_channels == 1

  def expected(ca_reduction):
    config = tiny_setup.config_with("", **{
        "model.sr_features": 16, "model.sr_blocks": 2,
        "model.ca_reduction": ca_reduction, "model.hrnet_modules": (1, 4, 3),
        "model.hrnet_blocks": 4})
    model = factory.build_student(config.model, tiny_setup.NUM_TRAIN_IDS)
    return factory.abstract_variables(model, (1, *tiny_setup.IMAGE_SIZE, 3))

  factory.check_fits(variables, expected(16), "weights/student")  # Fits.
  with pytest.raises(errors.ConfigError) as info:
    factory.check_fits(variables, expected(4), "weights/student")
  message = str(info.value)
  assert "weights/student does not fit" in message
  assert "['block_0_ca']['squeeze']['kernel'] has shape (1, 1, 16, 1)" in message
  assert "squeezes 16 -> 1 channels, the configured one 16 -> 4" in message
  assert "--config.model.ca_reduction=16" in message


def test_evaluation_refuses_weights_of_another_attention_layout(
    tiny_source, tiny_trained, tmp_path):
  # The tiny student squeezes 8 -> 4 (ca_reduction 2); evaluating it with
  # the paper's ca_reduction 4 (8 -> 2) fails before anything is written.
  import tiny_setup  # pylint: disable=g-import-not-at-top
  from pshrnet_jax import driver  # pylint: disable=g-import-not-at-top
  workdir = tiny_setup.copy_workdir(tiny_trained["workdir"], tmp_path)
  before = tiny_setup.tree_hash(workdir)
  config = tiny_setup.config_with(tiny_source, mode="eval",
                                  **{"model.ca_reduction": 4})
  with pytest.raises(errors.ConfigError,
                     match=r"The student .*squeezes 8 -> 4 channels, the "
                     r"configured one 8 -> 2.*ca_reduction=2"):
    driver.run(config, workdir)
  assert tiny_setup.tree_hash(workdir) == before
