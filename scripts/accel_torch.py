"""The PyTorch parts of `scripts/accelerator_check.py`: the reference
training steps and feature extraction (`scripts/torch_steps.py`) on the
same device, eager ('torch') or under `torch.compile` ('torch_compile').
Runs in its own process; imports no JAX.

Settings, the same work as the JAX side: float32 products and
convolutions may use TF32 as JAX's default precision does on NVIDIA GPUs
(`torch.set_float32_matmul_precision('high')`; cuDNN's convolutions
already default to it); bfloat16 is `torch.autocast` (float32 parameters
and optimiser, as `compute_dtype=bfloat16`); `cudnn.benchmark` on (fixed
shapes, as XLA autotunes its convolutions).
"""

import time

import numpy as np
import torch

from reference import torch_train
from scripts import jax_steps
from scripts import torch_steps
from scripts.accel_record import finite
from scripts.accel_record import say
from scripts.accel_record import spread

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def environment(device: torch.device) -> dict:
  info = {"torch": torch.__version__, "torch_device": str(device),
          "torch_threads": torch.get_num_threads(),
          "torch_float32_matmul_precision":
              torch.get_float32_matmul_precision(),
          "cudnn_benchmark": torch.backends.cudnn.benchmark}
  if device.type == "cuda":
    props = torch.cuda.get_device_properties(device)
    info.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                gpu_capability=f"{props.major}.{props.minor}",
                torch_cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
  return info


def _peak_memory(device: torch.device) -> int | None:
  if device.type != "cuda":
    return None
  return int(torch.cuda.max_memory_allocated(device))


def _reset_memory(device: torch.device) -> None:
  if device.type == "cuda":
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


def step_row(phase, dtype, args, batch, device, variant) -> dict:
  config = jax_steps.make_config(args)
  _reset_memory(device)
  backend = args.compile_backend if variant == "compile" else None
  step = torch_steps.TrainStep(phase, config, args, batch, device=device,
                               amp_dtype=DTYPES[dtype],
                               compile_backend=backend)
  # The first call compiles (torch.compile) or picks cuDNN's algorithms.
  torch_steps.synchronize(device)
  t0 = time.perf_counter()
  step()
  torch_steps.synchronize(device)
  first_s = time.perf_counter() - t0
  timed = torch_steps.time_steps(step, args.warmup, args.steps)
  row = dict(framework="torch", variant=variant, phase=phase, dtype=dtype,
             compile_s=first_s, peak_bytes=_peak_memory(device),
             first_loss=timed["first_loss"], last_loss=timed["last_loss"],
             **spread(timed["step_ms"], args.p * args.k))
  if backend:
    row["compile_backend"] = backend
  row["finite"] = finite(row["first_loss"], row["last_loss"])
  say(f"  torch {variant} phase {phase} {dtype}: first step {first_s:.1f} s,"
      f" step {row['median_ms']:.2f} ms (min {row['min_ms']:.2f}, max "
      f"{row['max_ms']:.2f}), loss {row['first_loss']:.4g} -> "
      f"{row['last_loss']:.4g}")
  return row


def extract_row(dtype, args, images, device) -> dict:
  config = jax_steps.make_config(args)
  _reset_memory(device)
  net = torch_steps.student(config, args, device)
  x = torch_train.images(images).to(device)
  run = lambda: torch_steps.features(net, x, DTYPES[dtype])
  run()
  ms = []
  for _ in range(args.extract_repeats):
    torch_steps.synchronize(device)
    t0 = time.perf_counter()
    run()
    torch_steps.synchronize(device)
    ms.append(1e3 * (time.perf_counter() - t0))
  row = dict(framework="torch", dtype=dtype, batch=len(images),
             peak_bytes=_peak_memory(device), **spread(ms))
  row["images_per_s"] = 1e3 * len(images) / row["median_ms"]
  say(f"  torch extraction {dtype}: {row['images_per_s']:.1f} images/s")
  return row


def run(args, record, part: str) -> None:
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  if device.type == "cuda":
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.benchmark = True
  record.info(environment=environment(device))
  say(f"PyTorch {torch.__version__} on {device}")
  variant = "compile" if part == "torch_compile" else "eager"
  if variant == "eager":
    for dtype in args.dtype_list:
      rate = record.attempt(
          f"torch matmul {dtype}", torch_steps.matmul_gflops, device,
          DTYPES[dtype] or torch.float32, args.matmul_size)
      if rate:
        record.add(dict(kind="peak", framework="torch", dtype=dtype,
                        n=args.matmul_size, gflops=rate))
        say(f"  torch matmul {args.matmul_size}^2 {dtype}: {rate:.0f} "
            "GFLOP/s")
  batch = jax_steps.make_batch(args)
  images = np.random.default_rng(0).integers(
      0, 256, (args.extract_batch, *args.image_size, 3), dtype=np.uint8)
  last_s = 0.0
  # The steps in --rows' order (phase 1 in both dtypes first), then the
  # extractions: what a time cap cuts is last.
  for phase, dtype in args.row_list:
    t0 = time.perf_counter()
    row = record.attempt(f"torch {variant} phase {phase} {dtype}", step_row,
                         phase, dtype, args, batch, device, variant,
                         min_s=max(5, 0.8 * last_s))
    last_s = time.perf_counter() - t0
    if row:
      record.add(dict(kind="step", **row))
  if variant != "eager":
    return
  for dtype in args.dtype_list:
    row = record.attempt(f"torch extraction {dtype}", extract_row, dtype,
                         args, images, device, min_s=5)
    if row:
      record.add(dict(kind="extract", **row))
