"""The student's feature extraction: images/s beside PyTorch, and FLOP rate.

Usage:
  python scripts/benchmark_extract.py --width=32 --image_size=256,128 \
      --sr_blocks=18 --sr_features=64                  # the paper's student
  python scripts/benchmark_extract.py --image_size=64,32 --hrnet_modules=1,1,1 \
      --hrnet_blocks=1                                 # the demo's student

JAX: the evaluation's own `features.make_feature_fn` (VDSR-CA, then
HRNet-ReID on the image and its mirror, features summed and L2-normalised)
on random variables of the configured student. PyTorch: the reference
student of reference/torch_models.py at the same depth, eval mode, the same
flip-summed features, `torch.no_grad`. Both in this process, on the same
uint8 batch, with `--threads` threads each (XLA's thread pool is sized by
the CPUs this process may use: run under `taskset -c 0` for one thread).

The FLOP count is XLA's cost analysis of the compiled JAX program (the same
network as PyTorch's), and the machine's peak is measured here: the best
float32 GEMM rate of `torch.mm` on 2048 x 2048 matrices with the same
threads (an attainable peak; the vendor's figure is cores x clock x FLOPs
per cycle of the vector units, printed from /proc/cpuinfo for reference).
"""

import argparse
import os
import sys
import time

import jax
import numpy as np
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from pshrnet_jax.evaluation import features
from pshrnet_jax.models import factory
from reference import torch_train
from scripts import jax_steps
from scripts import torch_steps
# pylint: enable=g-import-not-at-top,wrong-import-position


def _best_s(fn, repeats: int) -> float:
  fn()  # Warm-up.
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def cpu_description() -> str:
  model, flags = "?", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and model == "?":
          model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
          flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  vector = ("AVX-512" if "avx512f" in flags else
            "AVX2" if "avx2" in flags else "SSE")
  return f"{model}, {vector}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  jax_steps.add_size_flags(parser, width=32, image_size=(256, 128),
                           sr_blocks=18, sr_features=64, pairs=False)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  jax_steps.check_size_flags(parser, args)
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  config = jax_steps.make_config(args)
  size = tuple(args.image_size)
  print(f"CPU: {cpu_description()}, {threads} thread(s) each side; jax "
        f"{jax.__version__}, torch {torch.__version__}")
  print(f"Student: VDSR-CA {args.sr_blocks} x {args.sr_features} + "
        f"HRNet-W{args.width} (modules {tuple(args.hrnet_modules)}, "
        f"{args.hrnet_blocks} blocks), {size[0]}x{size[1]}, batch "
        f"{args.batch}, flip-summed features (2 x batch forwards)")
  images = np.random.default_rng(0).integers(
      0, 256, (args.batch, *size, 3), dtype=np.uint8)

  model = factory.build_student(config.model, args.num_classes)
  variables = jax_steps.random_variables(model, size, seed=0)
  feature_fn = features.make_feature_fn(model.apply)
  t0 = time.perf_counter()
  compiled = feature_fn.lower(variables, images).compile()
  compile_s = time.perf_counter() - t0
  flops = float(compiled.cost_analysis()["flops"])
  jax_s = _best_s(lambda: jax.block_until_ready(compiled(variables, images)),
                  args.repeats)

  net = torch_steps.student(config, args)
  x = torch_train.images(images)
  torch_s = _best_s(lambda: torch_steps.features(net, x), args.repeats)

  peak = torch_steps.matmul_gflops()
  rate = flops / jax_s / 1e9
  print(f"JAX:     compile {compile_s:.1f} s; {args.batch / jax_s:.2f} "
        f"images/s (best of {args.repeats}); {flops / 1e9:.2f} GFLOP per "
        f"batch -> {rate:.1f} GFLOP/s")
  print(f"PyTorch: {args.batch / torch_s:.2f} images/s (best of "
        f"{args.repeats})")
  print(f"JAX / PyTorch images/s = {torch_s / jax_s:.2f}x")
  print(f"Peak (torch.mm 2048^2 float32, {threads} thread(s)): {peak:.1f} "
        f"GFLOP/s -> JAX extraction at {100 * rate / peak:.0f}% of it")


if __name__ == "__main__":
  main()
