"""The JAX parts of `scripts/accelerator_check.py`: the project's training
steps (`scripts/jax_steps.py`: the loop's own jitted step) and the
evaluation's feature extraction, timed on the default device, with the
matrix-product rate measured in the same process. Runs in its own process
(the check starts one per part)."""

import time

import jax
import jax.numpy as jnp
import numpy as np

from pshrnet_jax.evaluation import features
from pshrnet_jax.models import factory
from pshrnet_jax.models import layers
from scripts import jax_steps
from scripts.accel_record import finite
from scripts.accel_record import say
from scripts.accel_record import spread

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def environment() -> dict:
  device = jax.devices()[0]
  return {"jax_backend": jax.default_backend(),
          "jax_device": getattr(device, "device_kind", str(device)),
          "jax_devices": jax.device_count(),
          "jax_default_matmul_precision":
              str(jax.config.jax_default_matmul_precision or "default")}


def matmul_gflops(n: int, dtype: str, repeats: int = 5) -> float:
  """The best rate of a jitted n x n product at JAX's default precision
  (on NVIDIA GPUs float32 then runs as TF32), GFLOP/s."""
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (n, n), DTYPES[dtype]) for k in keys)
  product = jax.jit(jnp.matmul)
  product(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    product(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9


def _memory(compiled) -> int | None:
  """Device bytes the compiled program needs: arguments + outputs (less
  the donated ones it aliases) + its temporaries."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def device_peak_bytes() -> int | None:
  """The process's peak device memory so far (None where not reported)."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get("peak_bytes_in_use")


def disable_barriers() -> None:
  """Traces the models from here on with `layers.materialize` as the
  identity: the programs then have no optimisation barriers (what they
  cost or save on this backend). This process only."""
  layers.materialize = lambda x: x


def step_row(phase: int, dtype: str, args, batch, variant: str) -> dict:
  """Compiles and times the phase's training step with `dtype`."""
  config = jax_steps.make_config(args)
  config.model.compute_dtype = dtype
  built = jax_steps.build_step(phase, config, args, batch)
  compiled, compile_s, barriers = jax_steps.compile_step(built)
  timed = jax_steps.run_steps(compiled, built, args.warmup, args.steps)
  row = dict(framework="jax", variant=variant, phase=phase, dtype=dtype,
             compile_s=compile_s, barriers=barriers,
             program_bytes=_memory(compiled),
             device_peak_bytes=device_peak_bytes(),
             first_loss=timed["first_loss"], last_loss=timed["last_loss"],
             **spread(timed["step_ms"], args.p * args.k))
  row["finite"] = finite(row["first_loss"], row["last_loss"])
  say(f"  jax {variant} phase {phase} {dtype}: compile {compile_s:.1f} s, "
      f"step {row['median_ms']:.2f} ms (min {row['min_ms']:.2f}, max "
      f"{row['max_ms']:.2f}), loss {row['first_loss']:.4g} -> "
      f"{row['last_loss']:.4g}, barriers {barriers}")
  return row


def extract_row(dtype: str, args, images: np.ndarray) -> tuple[dict, np.ndarray]:
  """Times the evaluation's flip-summed student features; returns the row
  and the features (for comparing dtypes)."""
  config = jax_steps.make_config(args)
  config.model.compute_dtype = dtype
  model = factory.build_student(config.model, args.num_classes)
  variables = jax.device_put(
      jax_steps.random_variables(model, tuple(args.image_size), seed=0))
  x = jax.device_put(images)
  fn = features.make_feature_fn(model.apply)
  t0 = time.perf_counter()
  compiled = fn.lower(variables, x).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  feats = jax.block_until_ready(compiled(variables, x))[0]
  ms = []
  for _ in range(args.extract_repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(variables, x))
    ms.append(1e3 * (time.perf_counter() - t0))
  row = dict(framework="jax", dtype=dtype, batch=len(images),
             compile_s=compile_s, flops_per_batch=cost.get("flops"),
             program_bytes=_memory(compiled), **spread(ms))
  row["images_per_s"] = 1e3 * len(images) / row["median_ms"]
  say(f"  jax extraction {dtype}: compile {compile_s:.1f} s, "
      f"{row['images_per_s']:.1f} images/s, "
      f"{(row['flops_per_batch'] or 0) / 1e9:.1f} GFLOP per batch")
  return row, np.asarray(feats, np.float32)


def run(args, record, part: str) -> None:
  """The part 'jax' (steps, extraction, peak) or 'jax_nobarrier' (the steps
  traced without `layers.materialize`'s barriers)."""
  env = environment()
  record.info(environment=env)
  say(f"JAX {jax.__version__} on {env['jax_device']} ({env['jax_backend']})")
  variant = "default"
  if part == "jax_nobarrier":
    disable_barriers()
    variant = "no_barriers"
  else:
    for dtype in args.dtype_list:
      rate = record.attempt(f"jax matmul {dtype}", matmul_gflops,
                            args.matmul_size, dtype)
      if rate:
        record.add(dict(kind="peak", framework="jax", dtype=dtype,
                        n=args.matmul_size, gflops=rate))
        say(f"  jax matmul {args.matmul_size}^2 {dtype}: {rate:.0f} GFLOP/s")
  batch = jax_steps.make_batch(args)
  images = np.random.default_rng(0).integers(
      0, 256, (args.extract_batch, *args.image_size, 3), dtype=np.uint8)
  feats, last_s = {}, 0.0
  # The steps in --rows' order (phase 1 in both dtypes first), then the
  # extractions: what a time cap cuts is last.
  for phase, dtype in args.row_list:
    t0 = time.perf_counter()
    row = record.attempt(f"jax {variant} phase {phase} {dtype}", step_row,
                         phase, dtype, args, batch, variant,
                         min_s=max(10, 0.8 * last_s))
    last_s = time.perf_counter() - t0
    if row:
      record.add(dict(kind="step", **row))
  if part == "jax_nobarrier":
    return
  for dtype in args.dtype_list:
    done = record.attempt(f"jax extraction {dtype}", extract_row, dtype, args,
                          images, min_s=10)
    if done:
      record.add(dict(kind="extract", **done[0]))
      feats[dtype] = done[1]
  if len(feats) == 2:
    # Unit vectors: their dot product is the cosine.
    cos = np.sum(feats["float32"] * feats["bfloat16"], axis=1)
    record.info(bf16_feature_cosine_min=float(cos.min()),
                bf16_feature_max_abs_diff=float(
                    np.abs(feats["float32"] - feats["bfloat16"]).max()))
