"""Training-step throughput of the JAX steps beside a PyTorch reference.

Usage:
  python scripts/benchmark_train.py                        # W8, 128x64, ~3 min
  python scripts/benchmark_train.py --width=32 --image_size=256,128 \
      --sr_blocks=18 --sr_features=64 --steps=3 --warmup=1  # the paper's size

For each phase it times, in one process and on the same random uint8 batch
of P x K HR/LR pairs:
  * JAX: exactly the project's step (steps.phase1_step / phase2_step through
    steps.jit_step on a 1-device mesh, optimiser from optim.make_optimizer,
    models from models.factory, paper loss config):
    compile time (lower + compile) and the median step time;
  * PyTorch (CPU, eager): the reference modules of reference/torch_models.py
    with the same losses (label-smoothed CE, batch-hard triplet over
    Seq1..Seq5, L1 SR, pseudo-siamese L1 over the paper's set) and
    torch.optim.SGD(nesterov, two LR groups, weight decay 5e-4).
Then, unless --no_breakdown, the step split in two: forward+loss timed on
its own (JAX: a separately jitted forward; PyTorch: timestamps inside the
step) and backward+update = step - forward.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from pshrnet_jax.models import inputs
from pshrnet_jax.models import layers
from pshrnet_jax.training import losses
from scripts import jax_steps
from scripts import torch_steps
# pylint: enable=g-import-not-at-top,wrong-import-position


def _load():
  return "load %.2f/%.2f/%.2f" % os.getloadavg()


def _min_ms(fn, repeats):
  """Best wall time of `fn()` in ms over `repeats` calls after one warm-up.

  The minimum, not the median: on a shared machine a call is often
  pre-empted, and the minimum is the figure that repeats across runs.
  """
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return 1e3 * min(times)


# ----------------------------------------------------------------- JAX side
def jax_phase(phase, config, args, batch_np):
  """Compiles and times the project's jitted step; returns a result dict."""
  built = jax_steps.build_step(phase, config, args, batch_np)
  batch, extra = built.batch, built.extra
  model, teacher, loss_config = built.model, built.teacher, built.loss_config
  compiled, compile_s, _ = jax_steps.compile_step(built)
  timed = jax_steps.run_steps(compiled, built, args.warmup, args.steps)
  if not np.isfinite(timed["last_loss"]):
    raise FloatingPointError(
        f"JAX phase {phase}: loss became {timed['last_loss']}")
  result = dict(compile_s=compile_s, step_ms=timed["step_ms"],
                loss=timed["first_loss"])
  if args.no_breakdown:
    return result
  state = built.state

  # Forward + loss alone, as inside the step (train-mode BN, dropout).
  def forward(params, batch_stats, teacher_vars, b):
    kw = dict(ce_weight=loss_config["ce_weight"], margin=loss_config[
        "triplet_margin"], label_smoothing=loss_config["label_smoothing"],
              triplet_weight=loss_config["triplet_weight"])
    lr_or_hr = inputs.normalize_images(b["hr" if phase == 1 else "lr"])
    (_, aux), _ = model.apply({"params": params, "batch_stats": batch_stats},
                              lr_or_hr, train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.key(3)})
    if phase == 1:
      return losses.id_loss(aux, b["label"], **kw)[0]
    hr = inputs.normalize_images(b["hr"])
    _, t_aux = teacher.apply(teacher_vars, hr, train=False)
    return losses.total_loss(aux, t_aux, hr, b["label"],
                             sr_weight=loss_config["sr_weight"],
                             ps_weight=loss_config["ps_weight"],
                             ps_features=tuple(loss_config["ps_features"]),
                             **kw)[0]
  fwd = jax.jit(forward, compiler_options=layers.compiler_options())
  fwd_args = (state.params, state.batch_stats, extra[0] if extra else {},
              batch)
  result["forward_ms"] = _min_ms(
      lambda: fwd(*fwd_args).block_until_ready(), max(args.steps, 2))
  return result


# --------------------------------------------------------------- torch side
def torch_phase(phase, config, args, batch_np):
  """Times the eager PyTorch step (CPU); returns a result dict."""
  step = torch_steps.TrainStep(phase, config, args, batch_np)
  step_ms, fwd_ms, first_loss = [], [], None
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    loss = step.forward_loss()
    t1 = time.perf_counter()
    step.update(loss)
    t2 = time.perf_counter()
    first_loss = float(loss.detach()) if first_loss is None else first_loss
    if i >= args.warmup:
      step_ms.append(1e3 * (t2 - t0))
      fwd_ms.append(1e3 * (t1 - t0))
  return dict(step_ms=step_ms, forward_ms=min(fwd_ms),
              loss=first_loss)


def _row(name, jax_ms, torch_ms):
  ratio = f"{jax_ms / torch_ms:7.2f}" if torch_ms else "      -"
  t = f"{torch_ms:10.1f}" if torch_ms is not None else "         -"
  print(f"  {name:<40s}{jax_ms:10.1f}{t}   {ratio}")


def report_phase(phase, jres, tres, args):
  b = args.p * args.k
  j_ms, t_ms = (statistics.median(jres["step_ms"]),
                statistics.median(tres["step_ms"]))
  what = ("teacher, L_ID" if phase == 1
          else "student + frozen teacher, L_TOTAL")
  print(f"\nPhase {phase} ({what}), {b} pairs/step, {_load()}")
  print(f"  JAX   compile {jres['compile_s']:.1f}"
        f" s, step {j_ms:.0f} ms (min {min(jres['step_ms']):.0f}), "
        f"{1e3 * b / j_ms:.2f} pairs/s, first loss {jres['loss']:.3f}")
  print(f"  torch step {t_ms:.0f} ms (min {min(tres['step_ms']):.0f}), "
        f"{1e3 * b / t_ms:.2f} pairs/s, first loss {tres['loss']:.3f}")
  print(f"  speed JAX/torch = {t_ms / j_ms:.2f}x (>1: JAX faster; medians)")
  if os.getloadavg()[0] > os.cpu_count():
    print(f"  NOTE: load above {os.cpu_count()} cores: other processes share "
          "the CPU; torch with >1 thread suffers most (threads wait at "
          "barriers for a pre-empted peer); try --torch_threads=1")
  if args.no_breakdown:
    return
  j_ms, t_ms = min(jres["step_ms"]), min(tres["step_ms"])
  print("  Breakdown, ms per step, best of the timed steps:")
  print(f"  {'':<40s}{'JAX':>10s}{'torch':>10s}   JAX/torch")
  _row("step (measured)", j_ms, t_ms)
  _row("forward + loss (measured)", jres["forward_ms"], tres["forward_ms"])
  _row("backward + update (step - forward)", j_ms - jres["forward_ms"],
       t_ms - tres["forward_ms"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  jax_steps.add_size_flags(parser)
  for name, default in (("steps", 5), ("warmup", 1),
                        ("torch_threads", os.cpu_count())):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--phases", default="1,2")
  parser.add_argument("--no_breakdown", action="store_true")
  parser.add_argument("--compilation_cache", default="",
                      help="persistent XLA cache dir; JAX compile times are "
                      "then cache loads when warm")
  args = parser.parse_args()
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax_steps.check_size_flags(parser, args)
  if args.steps < 1:
    parser.error("--steps must be >= 1")
  torch.set_num_threads(args.torch_threads)
  config = jax_steps.make_config(args)
  print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{_load()}; Python {platform.python_version()}, jax {jax.__version__}"
        f" ({jax.devices()[0].platform}, {jax.device_count()} device), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads)")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  compilation cache: "
        f"{args.compilation_cache or 'off'}")
  print(f"Config: HRNet-W{args.width} (modules {tuple(args.hrnet_modules)}, "
        f"{args.hrnet_blocks} blocks), head_planes "
        f"{tuple(config.model.head_planes)}, VDSR-CA {args.sr_blocks} blocks "
        f"x {args.sr_features} ch, {args.image_size[0]}x{args.image_size[1]},"
        f" P x K = {args.p} x {args.k}, M = {args.num_classes}, float32, "
        f"{args.warmup} warm-up + {args.steps} timed steps")
  batch = jax_steps.make_batch(args)
  for phase in (int(p) for p in args.phases.split(",")):
    jres = jax_phase(phase, config, args, batch)
    tres = torch_phase(phase, config, args, batch)
    report_phase(phase, jres, tres, args)


if __name__ == "__main__":
  main()
