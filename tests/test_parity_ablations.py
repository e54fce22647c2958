"""Paper Table IV's networks against PyTorch: ResNet-50, SRCNN, RCAN.

The references (reference/torch_ablations.py, torchvision's and the
authors' key names) get random weights and random BatchNorm
statistics/affines. ResNet-50 goes through `load_torch_resnet`, so the
conversion is proven with the network; SRCNN and RCAN weights are renamed
here (no pretrained weights of theirs are loaded by the project). Eval
mode; max relative error max|jax - torch| / max|torch| < 1e-4. Parameter
counts of the full-size networks come from `jax.eval_shape` (no compute).
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pshrnet_jax import convert
from pshrnet_jax import errors
from pshrnet_jax.convert import load_torch_resnet
from pshrnet_jax.models import RCAN
from pshrnet_jax.models import ResNet50Classifier
from pshrnet_jax.models import SRCNN

from reference import torch_ablations as ta
from reference import torch_models as tr

torch.set_num_threads(1)  # See test_parity.py: two threads thrash here.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}
TINY_RESNET = dict(width=4, blocks=(1, 2, 1, 1))
TINY_RCAN = dict(num_groups=2, num_blocks=2, reduction=4)


def _count(module, shape=(1, 32, 32, 3)) -> int:
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                              jnp.zeros(shape)))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])))


def _rel_err(got, want) -> float:
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def _nchw(shape, seed):
  return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _torch_forward(module, x):
  with torch.no_grad():
    return module(torch.from_numpy(x)).numpy()


def test_parameter_counts():
  assert _count(ResNet50Classifier(num_classes=1000)) == 25_557_032
  assert _count(SRCNN()) == 69_251  # 9x9x3x64 + 5x5x64x32 + 5x5x32x3 + biases
  assert _count(RCAN()) == 15_296_931  # 10 groups x 20 RCABs, 64 channels
  # And the references agree (so the counts are torch's, not ours alone).
  for module, torch_module in ((SRCNN(), ta.SRCNN()),
                               (RCAN(**TINY_RCAN, features=16),
                                ta.RCAN(2, 2, 16, 4))):
    assert _count(module) == sum(p.numel() for p in torch_module.parameters())


@pytest.mark.parametrize("height,width", [(64, 32), (72, 40)])
def test_tiny_resnet_parity(height, width):
  torch_model = tr.randomize(ta.ResNet(num_classes=10, **TINY_RESNET), seed=1)
  variables, module, info = convert.convert_checkpoint(
      tr.state_dict_numpy(torch_model), "resnet50")
  assert {k: info["model_kwargs"][k] for k in ("num_classes", "width",
                                              "blocks")} == {
      "num_classes": 10, "width": 4, "blocks": [1, 2, 1, 1]}
  x = _nchw((2, 3, height, width), seed=2)
  got = jax.jit(lambda v, x: module.apply(v, x, train=False),
                compiler_options=FAST_COMPILE)(variables,
                                               x.transpose(0, 2, 3, 1))
  assert _rel_err(got, _torch_forward(torch_model, x)) < TOL


def test_resnet50_logits_from_a_torchvision_state_dict():
  """`load_torch_resnet` on a randomised full ResNet-50, at 64x64."""
  torch_model = tr.randomize(ta.ResNet(), seed=3)
  variables = load_torch_resnet(tr.state_dict_numpy(torch_model))
  x = _nchw((1, 3, 64, 64), seed=4)
  want = _torch_forward(torch_model, x)
  del torch_model
  module = ResNet50Classifier(num_classes=1000)
  got = jax.jit(lambda v, x: module.apply(v, x, train=False),
                compiler_options=FAST_COMPILE)(variables,
                                               x.transpose(0, 2, 3, 1))
  assert got.shape == (1, 1000)
  assert _rel_err(got, want) < TOL


def test_resnet_conversion_is_strict():
  state = tr.state_dict_numpy(ta.ResNet(num_classes=10, **TINY_RESNET))
  with pytest.raises(errors.ConversionError, match=r"layer2\.1\.bn3\.weight"):
    convert.load_torch_resnet({k: v for k, v in state.items()
                               if k != "layer2.1.bn3.weight"})
  with pytest.raises(errors.ConversionError, match=r"unexpected key 'extra'"):
    convert.load_torch_resnet(dict(state, extra=np.zeros(3, np.float32)))
  bad = dict(state, **{"layer1.0.conv2.weight": np.zeros((4, 4, 1, 1),
                                                         np.float32)})
  with pytest.raises(errors.ConversionError,
                     match=r"layer1\.0\.conv2\.weight.*\(4, 4, 1, 1\).*"
                     r"\(4, 4, 3, 3\)"):
    convert.load_torch_resnet(bad)
  hrnet = tr.state_dict_numpy(tr.HighResolutionNet(
      width=4, num_classes=10, head_planes=(4, 8, 8, 16), final_features=32))
  with pytest.raises(errors.ConversionError, match="load_torch_hrnet"):
    convert.load_torch_resnet(hrnet)
  with pytest.raises(errors.ConversionError, match="load_torch_resnet"):
    convert.load_torch_hrnet(state)


# SR networks: torch key -> Flax path, for the parity tests only.
_SR_RENAMES = (
    (r"head\.0", "head"), (r"tail\.0", "tail"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.0", r"group_\1/block_\2/conv1"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.2", r"group_\1/block_\2/conv2"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0",
     r"group_\1/block_\2/ca/squeeze"),
    (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2",
     r"group_\1/block_\2/ca/excite"),
    (r"body\.(\d+)\.body\.(\d+)", r"group_\1/conv"),
    (r"body\.(\d+)", "body_conv"), (r"(conv\d)", r"\1"),
)


def _sr_variables(torch_module):
  params = {}
  for key, value in tr.state_dict_numpy(torch_module).items():
    layer, leaf = key.rsplit(".", 1)
    for pattern, path in _SR_RENAMES:
      if re.fullmatch(pattern, layer):
        node = params
        for name in re.sub(pattern, path, layer).split("/"):
          node = node.setdefault(name, {})
        node["kernel" if leaf == "weight" else "bias"] = (
            value.transpose(2, 3, 1, 0) if leaf == "weight" else value)
        break
    else:
      raise AssertionError(f"no rename for {key}")
  return {"params": params}


@pytest.mark.parametrize("name", ["srcnn", "rcan"])
def test_sr_network_parity(name):
  if name == "srcnn":
    torch_model, module = ta.SRCNN(), SRCNN()  # The paper's 64 / 32.
  else:
    torch_model, module = ta.RCAN(2, 2, 16, 4), RCAN(features=16, **TINY_RCAN)
  torch_model = tr.randomize(torch_model, seed=5)
  variables = _sr_variables(torch_model)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                              jnp.zeros((1, 8, 8, 3))))
  assert jax.tree.structure(shapes) == jax.tree.structure(variables)
  x = _nchw((2, 3, 48, 24), seed=6)
  got = jax.jit(module.apply, compiler_options=FAST_COMPILE)(
      variables, x.transpose(0, 2, 3, 1))
  want = _torch_forward(torch_model, x).transpose(0, 2, 3, 1)
  assert got.shape == want.shape == (2, 48, 24, 3)
  assert _rel_err(got, want) < TOL


def test_convert_script_kind_resnet50(tmp_path):
  torch_model = tr.randomize(ta.ResNet(num_classes=10, **TINY_RESNET), seed=7)
  path, out = tmp_path / "resnet.pth", tmp_path / "converted"
  torch.save(torch_model.state_dict(), path)
  result = subprocess.run(
      [sys.executable, "-m", "pshrnet_jax.convert", "--kind=resnet50",
       f"--input={path}", f"--output={out}"], cwd=REPO,
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr
  info = json.loads((out / "conversion.json").read_text())
  assert info["model"] == "ResNet50Classifier"
  assert {k: info["model_kwargs"][k] for k in ("num_classes", "width",
                                              "blocks")} == {
      "num_classes": 10, "width": 4, "blocks": [1, 2, 1, 1]}
  assert info["num_params"] == sum(p.numel()
                                   for p in torch_model.parameters())
  restored = convert.restore_variables(str(out))
  assert jax.tree.all(jax.tree.map(np.array_equal, restored,
                                   load_torch_resnet(str(path))))
