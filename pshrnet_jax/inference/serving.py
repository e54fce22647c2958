"""The feature extractor as a self-contained `jax.export` artefact.

`python -m pshrnet_jax.export` writes feature_extractor.jax (weights
included, batch dimension symbolic) and feature_extractor.json (input size,
normalisation, outputs, the model); running it needs nothing but jax:

    import jax, numpy as np
    with open("exported/demo/feature_extractor.jax", "rb") as f:
      extractor = jax.export.deserialize(f.read())
    features, sr = extractor.call(images_uint8)   # (B, H, W, 3) uint8 RGB

`features` are (B, D) float32, flip-summed and L2-normalised (rank by
1 - dot); `sr` is the SR output (student) or the image (teacher), RGB in
[0, 1]. Images must already be at the network size the .json names.
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


def export_model(model, variables, info: ModelInfo, out_dir: str, *,
                 overwrite: bool = False) -> dict[str, Any]:
  """Writes the artefact and its description into `out_dir` (atomically;
  a non-empty one is replaced whole only with `overwrite`); returns the
  description (feature_extractor.json)."""
  height, width = info.image_size
  batch, = jax.export.symbolic_shape("batch")
  exported = jax.export.export(jax.jit(feature_function(model, variables)))(
      jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8))
  features_shape = exported.out_avals[0].shape
  description = {
      "format": "jax.export", "artefact": ARTEFACT,
      "jax_version": jax.__version__, "platforms": list(exported.platforms),
      "input": {"shape": ["batch", height, width, 3], "dtype": "uint8",
                "color": "RGB", "resize": info.lr_interpolation},
      "normalization": {"mean": list(inputs.IMAGENET_MEAN),
                        "std": list(inputs.IMAGENET_STD)},
      "outputs": {
          "features": {"shape": ["batch", int(features_shape[1])],
                       "dtype": "float32",
                       "meaning": "flip-summed, L2-normalised; distance = "
                                  "1 - dot product"},
          "sr": {"shape": ["batch", height, width, 3], "dtype": "float32",
                 "meaning": "SR restoration (student) or the input "
                            "(teacher), RGB in [0, 1]"}},
      "model": {"kind": info.kind, "source": info.path,
                **{k: info.description[k] for k in ("model", "model_kwargs")
                   if k in info.description}},
  }
  with atomic.atomic_directory(out_dir, replace=overwrite) as tmp:
    with open(os.path.join(tmp, ARTEFACT), "wb") as f:
      f.write(exported.serialize())
    with open(os.path.join(tmp, DESCRIPTION), "w") as f:
      json.dump(description, f, indent=2)
  return description
