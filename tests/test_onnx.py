"""ONNX export, checked in ONNX Runtime.

- Each primitive the graph writer emits (inference/onnx_graph.py), on its
  own: the ONNX graph of a one-operation JAX function, run by ONNX Runtime
  at two batch sizes, against JAX. Data movement (reshape, transpose,
  slices, casts, max, pooling) must be equal; arithmetic equal up to float32
  rounding (a few ulps, 1e-6 relative); sums of products (convolution,
  matmul, sums) within 1e-6 of the output's norm.
- README's ONNX export command on the tiny trained student: ONNX Runtime's
  features and SR output equal the JAX extractor's within 1e-4 relative at
  batch 1 and 5 (measured ~1e-7), the description records opset and
  converter; a failed check writes nothing; a missing onnx names the extra
  to install.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import tiny_setup as tiny  # pylint: disable=g-import-not-at-top
from pshrnet_jax import errors
from pshrnet_jax import load_model
from pshrnet_jax.evaluation import features
from pshrnet_jax.inference import onnx_export
from pshrnet_jax.inference import onnx_graph
from pshrnet_jax.models import inputs

_RNG = np.random.default_rng(0)
_W = _RNG.normal(size=(3, 3, 4, 6)).astype(np.float32)  # HWIO
_B = _RNG.normal(size=(6,)).astype(np.float32)
_M = _RNG.normal(size=(96, 5)).astype(np.float32)


def _conv(x, stride, padding):
  return jax.lax.conv_general_dilated(
      x, _W, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO",
                                                           "NHWC"))


def _first_row(x):  # (B, 1, 4, 4): a static slice (x[:, :1] is a gather).
  return jax.lax.slice_in_dim(x, 0, 1, axis=1)


def _pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1),
                               (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))


# (name, function of x (batch, 6, 4, 4) float32, the ONNX op it must emit,
# how the result must agree: 'equal', 'ulps' or 'norm').
CASES = [
    ("add", lambda x: x + _B[:4], "Add", "equal"),
    ("sub", lambda x: x - 0.5, "Sub", "equal"),
    ("mul", lambda x: x * _B[:4], "Mul", "equal"),
    ("div", lambda x: x / (1.5 + _B[:4] ** 2), "Div", "ulps"),
    ("max (ReLU)", jax.nn.relu, "Max", "equal"),
    ("min", lambda x: jnp.minimum(x, 0.25), "Min", "equal"),
    ("neg", lambda x: -x, "Neg", "equal"),
    ("sqrt", lambda x: jnp.sqrt(x * x + 1.0), "Sqrt", "ulps"),
    ("rsqrt", lambda x: jax.lax.rsqrt(x * x + 1.0), "Reciprocal",
     "ulps"),
    ("logistic", jax.nn.sigmoid, "Sigmoid", "ulps"),
    ("exp", jnp.exp, "Exp", "ulps"),
    ("convert_element_type", lambda x: (3 * x).astype(jnp.int32).astype(
        jnp.float32), "Cast", "equal"),
    ("optimization_barrier", lambda x: jax.lax.optimization_barrier(x) + 1,
     "Identity", "equal"),
    ("reshape, batch kept", lambda x: x.reshape(x.shape[0], -1) @ _M,
     "Reshape", "norm"),
    ("reshape, batch moved", lambda x: jax.lax.index_in_dim(
        jnp.concatenate([x, 2 * x]).reshape(2, x.shape[0], -1), 1,
        keepdims=False), "Reshape", "equal"),
    ("broadcast_in_dim", lambda x: x + jax.lax.broadcast_in_dim(
        _first_row(x), x.shape, (0, 1, 2, 3)), "Expand", "equal"),
    ("broadcast_in_dim, new axis", lambda x: x * jax.lax.broadcast_in_dim(
        jnp.sum(x, axis=3), x.shape, (0, 1, 2)), "Unsqueeze", "ulps"),
    ("transpose", lambda x: jnp.transpose(x, (0, 3, 1, 2)), "Transpose",
     "equal"),
    ("squeeze", lambda x: jax.lax.squeeze(_first_row(x), (1,)), "Squeeze",
     "equal"),
    ("slice", lambda x: jax.lax.slice(x, (0, 1, 2, 0), (x.shape[0], 5, 4, 4),
                                      (1, 2, 1, 1)), "Slice", "equal"),
    ("rev", lambda x: jnp.flip(x, axis=2), "Slice", "equal"),
    ("concatenate", lambda x: jnp.concatenate([x, jnp.flip(x, 1)], -1),
     "Concat", "equal"),
    ("reduce_sum", lambda x: jnp.mean(x, axis=(1, 2)), "ReduceSum", "norm"),
    ("reduce_max", lambda x: jnp.max(x, axis=(1, 2)), "ReduceMax", "equal"),
    ("dot_general", lambda x: x.reshape(x.shape[0], -1) @ _M, "MatMul",
     "norm"),
    ("dot_general, W transposed", lambda x: jax.lax.dot_general(
        x.reshape(x.shape[0], -1), _M.T, (((1,), (1,)), ((), ()))),
     "MatMul", "norm"),
    ("conv 3x3 stride 2", lambda x: _conv(x, 2, ((1, 1), (1, 1))), "Conv",
     "norm"),
    ("conv 3x3, bias", lambda x: _conv(x, 1, ((1, 1), (1, 1))) + _B,
     "Conv", "norm"),
    ("conv, uneven padding", lambda x: _conv(x, 1, ((0, 2), (1, 0))),
     "Conv", "norm"),
    ("reduce_window_max", _pool, "MaxPool", "equal"),
]
_SHAPE = (6, 4, 4)


def _run(proto, x):
  session = ort.InferenceSession(proto.SerializeToString(),
                                 providers=["CPUExecutionProvider"])
  return session.run(None, {"x": x})


@pytest.mark.parametrize("name, fn, op, agree", CASES,
                         ids=[c[0] for c in CASES])
def test_each_primitive_against_jax(name, fn, op, agree):
  proto = onnx_graph.to_onnx(fn, _SHAPE, np.float32, input_name="x",
                             output_names=["y"])
  assert op in {n.op_type for n in proto.graph.node}, name
  for batch in (1, 3):
    x = np.random.default_rng(batch).normal(
        size=(batch, *_SHAPE)).astype(np.float32)
    got, = _run(proto, x)
    want = np.asarray(jax.jit(fn)(x))
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if agree == "equal":
      np.testing.assert_array_equal(got, want)
    elif agree == "ulps":
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    else:
      assert np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(want), name


def test_a_primitive_without_emitter_is_named():
  with pytest.raises(errors.ConversionError, match="'sin'"):
    onnx_graph.to_onnx(jnp.sin, _SHAPE, np.float32, input_name="x",
                       output_names=["y"])


def test_missing_onnx_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails.
  with pytest.raises(errors.ConfigError, match=r"pip install .*\[onnx\]"):
    onnx_graph.to_onnx(jnp.sin, _SHAPE, np.float32, input_name="x",
                       output_names=["y"])


def _readme_onnx_command() -> str:
  with open(os.path.join(tiny.REPO, "README.md")) as f:
    body = f.read().split("## Export\n", 1)[1].split("\n## ", 1)[0]
  command, = [l for l in body.splitlines()
              if l.startswith("python -m pshrnet_jax.export")
              and "--format=onnx" in l]
  return command


def test_readme_onnx_export_matches_the_jax_extractor(tiny_trained,
                                                       tmp_path):
  out_dir = tmp_path / "exported_onnx"
  command = (_readme_onnx_command()
             .replace("workdirs/demo", tiny_trained["workdir"])
             .replace("workdirs/exported_onnx", str(out_dir)))
  proc = subprocess.run(tiny.command_argv(command), cwd=tiny.REPO,
                        capture_output=True,
                        text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(out_dir)) == ["feature_extractor.json",
                                         "feature_extractor.onnx"]
  with open(out_dir / "feature_extractor.json") as f:
    description = json.load(f)
  assert description["format"] == "onnx"
  assert description["opset"] == onnx_graph.OPSET == (
      onnx.load(str(out_dir / "feature_extractor.onnx")).opset_import[0]
      .version)
  assert description["converter"]["onnx"] == onnx.__version__
  assert description["check"]["features_relative_error"] < 1e-4

  model, variables, _ = load_model(tiny_trained["workdir"])
  images = np.random.default_rng(1).integers(
      0, 256, (5, *tiny.IMAGE_SIZE, 3), dtype=np.uint8)
  feats, sr = features.make_feature_fn(model.apply)(variables, images)
  session = ort.InferenceSession(str(out_dir / "feature_extractor.onnx"))
  for n in (1, 5):
    got_feats, got_sr = session.run(None, {"images": images[:n]})
    for got, want in ((got_feats, np.asarray(feats)[:n]),
                      (got_sr, inputs.denormalize_images(sr)[:n])):
      assert got.shape == want.shape
      err = np.linalg.norm(got - want) / np.linalg.norm(want)
      assert err < 1e-4, (n, err)
  assert description["outputs"]["features"]["shape"] == [
      "batch", feats.shape[1]]


def test_a_failed_check_writes_nothing(tiny_trained, tmp_path, monkeypatch):
  monkeypatch.setattr(onnx_export, "CHECK_RTOL", -1.0)  # Any error fails.
  model, variables, info = load_model(tiny_trained["workdir"])
  with pytest.raises(errors.ConversionError, match="nothing was written"):
    onnx_export.export_model(model, variables, info, str(tmp_path / "out"))
  assert os.listdir(tmp_path) == []
