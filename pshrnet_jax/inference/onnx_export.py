"""The feature extractor as ONNX (`python -m pshrnet_jax.export --format=onnx`).

Writes feature_extractor.onnx, the function serving.py exports (uint8 RGB
images at the network size, any batch -> L2-normalised flip-summed features
and the SR output), as an opset-17 ONNX graph with the weights inside, and
feature_extractor.json as for jax.export, with the opset, the converter's
and onnx's versions and the check below. ONNX runtimes run it without JAX
(ONNX Runtime is the one tested here):

    import onnxruntime as ort
    session = ort.InferenceSession("exported/demo/feature_extractor.onnx")
    features, sr = session.run(None, {"images": images_uint8})

Before anything is written, ONNX Runtime runs the graph on two probe images:
its features and SR output must equal the JAX extractor's within CHECK_RTOL
(relative), else nothing is written; the differences are recorded.
Needs onnx and onnxruntime: `pip install '.[onnx]'`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import pshrnet_jax
from pshrnet_jax.errors import ConversionError
from pshrnet_jax.evaluation import features
from pshrnet_jax.inference import onnx_graph
from pshrnet_jax.inference import serving
from pshrnet_jax.inference.loading import ModelInfo
from pshrnet_jax.models import inputs

ARTEFACT = "feature_extractor.onnx"
INPUT, OUTPUTS = "images", ("features", "sr")
CHECK_RTOL = 1e-4
PROBE_IMAGES = 2


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
  return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def check_against_jax(model_bytes: bytes, model, variables,
                      image_size: tuple[int, int]) -> dict[str, Any]:
  """ONNX Runtime's outputs for PROBE_IMAGES seeded random images against
  the JAX extractor's: {'onnxruntime', 'probe_images',
  'features_relative_error', 'sr_relative_error'}.

  Raises:
    ConversionError: a difference above CHECK_RTOL.
  """
  ort = onnx_graph.require("onnxruntime")
  images = np.random.default_rng(0).integers(
      0, 256, (PROBE_IMAGES, *image_size, 3), dtype=np.uint8)
  session = ort.InferenceSession(model_bytes,
                                 providers=["CPUExecutionProvider"])
  got = session.run(list(OUTPUTS), {INPUT: images})
  feats, sr = features.make_feature_fn(model.apply)(variables, images)
  want = (np.asarray(feats), inputs.denormalize_images(np.asarray(sr)))
  check = {"onnxruntime": ort.__version__, "probe_images": PROBE_IMAGES}
  for name, g, w in zip(OUTPUTS, got, want):
    if g.shape != w.shape:
      raise ConversionError(f"the ONNX graph's {name} have shape {g.shape}, "
                            f"JAX's {w.shape}; nothing was written")
    check[f"{name}_relative_error"] = error = _relative_error(g, w)
    if not error <= CHECK_RTOL:
      raise ConversionError(
          f"ONNX Runtime's {name} differ from the JAX extractor's by "
          f"{error:.3g} (relative; the limit is {CHECK_RTOL}); nothing was "
          "written")
  return check


def export_model(model, variables, info: ModelInfo, out_dir: str, *,
                 overwrite: bool = False) -> dict[str, Any]:
  """Writes feature_extractor.onnx and feature_extractor.json into
  `out_dir` (`serving.write`, after the check); returns the description.

  Raises:
    ConfigError: onnx or onnxruntime is not installed.
    ConversionError: an operation without an ONNX emitter, or ONNX Runtime
      disagreeing with JAX.
  """
  onnx = onnx_graph.require("onnx")
  proto = onnx_graph.to_onnx(
      serving.feature_function(model, variables), (*info.image_size, 3),
      np.uint8, input_name=INPUT, output_names=OUTPUTS,
      doc=f"pshrnet_jax {info.kind} of {info.path}: uint8 RGB images -> "
          "L2-normalised flip-summed features, SR output in [0, 1]")
  model_bytes = proto.SerializeToString()
  check = check_against_jax(model_bytes, model, variables, info.image_size)
  feature_dim = proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value
  description = serving.describe(
      info, int(feature_dim), ARTEFACT, format="onnx",
      opset=onnx_graph.OPSET, ir_version=int(proto.ir_version),
      converter={"name": "pshrnet_jax.inference.onnx_graph",
                 "version": pshrnet_jax.__version__,
                 "onnx": onnx.__version__, "jax": jax.__version__},
      input_name=INPUT, output_names=list(OUTPUTS), check=check)
  return serving.write(out_dir, model_bytes, description,
                       overwrite=overwrite)
