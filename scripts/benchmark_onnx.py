r"""ONNX export of a full-size student: ONNX Runtime against JAX, and speed.

    python scripts/benchmark_onnx.py --config=configs/mlr_market1501.py \
        [--batch=8] [--repeats=3]

Builds the config's student with random weights (BatchNorm statistics drawn
away from their initial 0 / 1, so every layer matters), converts the
exported function to ONNX (pshrnet_jax/inference/onnx_graph.py), checks
ONNX Runtime's features and SR output against the JAX extractor's as
`--format=onnx` does (onnx_export.check_against_jax), then times both on
`--batch` seeded images (best of `--repeats`, after a warm-up) and prints
the figures with how it ran.
"""

import os
import platform
import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from pshrnet_jax.evaluation import features
from pshrnet_jax.inference import onnx_export
from pshrnet_jax.inference import onnx_graph
from pshrnet_jax.inference import serving
from pshrnet_jax.models import factory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.")
_BATCH = flags.DEFINE_integer("batch", 8, "Images per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (best kept).")


def _random_variables(model, image_size):
  variables = jax.jit(model.init)(jax.random.key(0),
                                  np.zeros((1, *image_size, 3), np.float32))
  stats, tree = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
  rng = np.random.default_rng(0)
  drawn = [rng.uniform(0.5, 1.5, s.shape) if path[-1].key == "var"
           else rng.normal(0, 0.1, s.shape) for path, s in stats]
  return {"params": variables["params"],
          "batch_stats": jax.tree.unflatten(
              tree, [d.astype(np.float32) for d in drawn])}


def _best_seconds(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv):
  del argv
  config = _CONFIG.value
  ort = onnx_graph.require("onnxruntime")
  image_size = tuple(config.data.image_size)
  model = factory.build_student(config.model, 751)
  start = time.perf_counter()
  variables = _random_variables(model, image_size)
  init_s = time.perf_counter() - start
  start = time.perf_counter()
  proto = onnx_graph.to_onnx(
      serving.feature_function(model, variables), (*image_size, 3), np.uint8,
      input_name=onnx_export.INPUT, output_names=onnx_export.OUTPUTS)
  convert_s = time.perf_counter() - start
  model_bytes = proto.SerializeToString()
  check = onnx_export.check_against_jax(model_bytes, model, variables,
                                        image_size)
  images = np.random.default_rng(1).integers(
      0, 256, (_BATCH.value, *image_size, 3), dtype=np.uint8)
  session = ort.InferenceSession(model_bytes,
                                 providers=["CPUExecutionProvider"])
  feature_fn = features.make_feature_fn(model.apply)
  ort_s = _best_seconds(lambda: session.run(None, {"images": images}),
                        _REPEATS.value)
  jax_s = _best_seconds(lambda: jax.block_until_ready(
      feature_fn(variables, images)), _REPEATS.value)
  print(f"{config.model.backbone} W{config.model.width} + "
        f"{config.model.sr_module}, {image_size[0]}x{image_size[1]}: "
        f"{len(proto.graph.node)} ONNX nodes, {len(model_bytes) / 2**20:.1f} "
        f"MiB (init {init_s:.0f} s, conversion {convert_s:.0f} s)")
  print(f"ONNX Runtime vs JAX on {check['probe_images']} images: features "
        f"{check['features_relative_error']:.2e}, SR "
        f"{check['sr_relative_error']:.2e} (relative)")
  print(f"batch {_BATCH.value}: ONNX Runtime {_BATCH.value / ort_s:.1f} "
        f"images/s, JAX {_BATCH.value / jax_s:.1f} images/s")
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores; jax {jax.__version__}, onnxruntime {ort.__version__}")


if __name__ == "__main__":
  app.run(main)
