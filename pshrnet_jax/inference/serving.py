"""The feature extractor as a self-contained `jax.export` artefact.

`python -m pshrnet_jax.export` writes feature_extractor.jax (weights
included, batch dimension symbolic) and feature_extractor.json (input size,
normalisation, outputs, the model). Running it needs jax and flatbuffers
(jax.export's serialisation format, an optional dependency of jax), not
flax or this project:

    import jax, numpy as np
    with open("exported/demo/feature_extractor.jax", "rb") as f:
      extractor = jax.export.deserialize(f.read())
    features, sr = extractor.call(images_uint8)   # (B, H, W, 3) uint8 RGB

`features` are (B, D) float32, flip-summed and L2-normalised (rank by
1 - dot); `sr` is the SR output (student) or the image (teacher), RGB in
[0, 1]. Images must already be at the network size the .json names.
`--format=onnx` writes the same function as ONNX instead (onnx_export.py).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from data_pipelines import atomic
from pshrnet_jax.evaluation import features
from pshrnet_jax.inference.loading import ModelInfo
from pshrnet_jax.models import inputs

ARTEFACT = "feature_extractor.jax"
DESCRIPTION = "feature_extractor.json"


def feature_function(model, variables):
  """uint8 images -> (features, SR in [0, 1]), with the variables closed
  over (they become constants of the exported program)."""

  def extract(images):
    feats, sr = features.flip_summed(model.apply, variables, images)
    rgb = (sr * jnp.asarray(inputs.IMAGENET_STD)
           + jnp.asarray(inputs.IMAGENET_MEAN))
    return feats, jnp.clip(rgb, 0.0, 1.0)

  return extract


def describe(info: ModelInfo, feature_dim: int, artefact: str,
             **format_fields: Any) -> dict[str, Any]:
  """feature_extractor.json: the artefact's format (`format_fields`), its
  input and outputs, and the model it holds."""
  height, width = info.image_size
  return {
      **format_fields, "artefact": artefact,
      "input": {"shape": ["batch", height, width, 3], "dtype": "uint8",
                "color": "RGB", "resize": info.lr_interpolation},
      "normalization": {"mean": list(inputs.IMAGENET_MEAN),
                        "std": list(inputs.IMAGENET_STD)},
      "outputs": {
          "features": {"shape": ["batch", feature_dim], "dtype": "float32",
                       "meaning": "flip-summed, L2-normalised; distance = "
                                  "1 - dot product"},
          "sr": {"shape": ["batch", height, width, 3], "dtype": "float32",
                 "meaning": "SR restoration (student) or the input "
                            "(teacher), RGB in [0, 1]"}},
      "model": {"kind": info.kind, "source": info.path,
                **{k: info.description[k] for k in ("model", "model_kwargs")
                   if k in info.description}},
  }


def write(out_dir: str, artefact: bytes, description: dict[str, Any], *,
          overwrite: bool = False) -> dict[str, Any]:
  """The artefact and its description, written into `out_dir` atomically (a
  non-empty one is replaced whole only with `overwrite`); returns the
  description."""
  with atomic.atomic_directory(out_dir, replace=overwrite) as tmp:
    with open(os.path.join(tmp, description["artefact"]), "wb") as f:
      f.write(artefact)
    with open(os.path.join(tmp, DESCRIPTION), "w") as f:
      json.dump(description, f, indent=2)
  return description


def export_model(model, variables, info: ModelInfo, out_dir: str, *,
                 overwrite: bool = False) -> dict[str, Any]:
  """Writes the jax.export artefact and its description into `out_dir`
  (`write`); returns the description (feature_extractor.json)."""
  height, width = info.image_size
  batch, = jax.export.symbolic_shape("batch")
  exported = jax.export.export(jax.jit(feature_function(model, variables)))(
      jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8))
  description = describe(
      info, int(exported.out_avals[0].shape[1]), ARTEFACT,
      format="jax.export", jax_version=jax.__version__,
      platforms=list(exported.platforms))
  return write(out_dir, exported.serialize(), description,
               overwrite=overwrite)
