"""The input and loop parts of `scripts/accelerator_check.py`.

- 'pipeline': the built-in synthetic set drawn at the network size (the
  MLR build of `mlr_market1501` on top), then the grain P x K pipeline
  alone (`scripts/input_timing.py`), phase 1's HR batches and phase 2's
  HR/LR pairs, with every core as a worker and with none. JAX stays on the
  CPU in this part.
- 'loop': the real training loop, `driver.run` (what `python -m
  pshrnet_jax.main` runs) phase 1 on that set for a few hundred steps;
  steps/s and the share of the time the loop was blocked on its input,
  from the run's own TensorBoard scalars (`perf/pairs_per_second`,
  `perf/input_wait_share`), the first log interval (compiling, warm-up)
  left out. Then the same run again, preempted (SIGTERM, as a preempted
  machine is) half-way and started again: its exported teacher against
  the uninterrupted one's, bit for bit.
- 'resume_deterministic': that kill-and-resume, shorter, under the XLA
  flags the check's driver put in XLA_FLAGS (GPU determinism). With no
  flags of its own and the same epochs it would run the loop part's (e)
  program again: when that came out bit-identical, its row is reused and
  marked `same_run_as`.
"""

import json
import logging
import os
import signal
import time

import numpy as np

from scripts.accel_record import say



def synthetic_set(args) -> str:
  from data_pipelines.builders import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.generate_demo(
      os.path.join(args.scratch, "set"), 0, num_train_ids=args.set_ids,
      num_test_ids=args.set_test_ids, num_cameras=3,
      images_per_camera=args.set_images, image_size=tuple(args.image_size))


def overrides(args, **train) -> dict:
  """The `--config.*` values (over configs/mlr_market1501.py) of the loop
  runs: the check's network and batch on the synthetic set, phase 1 from
  random weights; `train` adds train.* and model.compute_dtype."""
  head = args.head_planes or [args.width * 2**i for i in range(4)]
  values = {
      "mode": "phase1", "init_from": "none", "num_devices": 1,
      "compilation_cache_dir": args.compilation_cache or os.path.join(
          args.scratch, "xla_cache"),
      "data.root": os.path.join(args.scratch, "set"),
      "data.source": "files",
      "data.build_dir": os.path.join(args.scratch, "build"),
      "data.image_size": tuple(args.image_size), "data.p": args.p,
      "data.k": args.k, "data.worker_count": args.workers,
      "model.width": args.width, "model.head_planes": tuple(head),
      "model.hrnet_modules": tuple(args.hrnet_modules),
      "model.hrnet_blocks": args.hrnet_blocks,
      "model.sr_blocks": args.sr_blocks,
      "model.sr_features": args.sr_features,
      "model.compute_dtype": args.loop_dtype}
  values.update({k if k.startswith("model.") else f"train.{k}": v
                 for k, v in train.items()})
  return values


def config_of(values: dict):
  """configs/mlr_market1501.py with `values` set (as the command does)."""
  from configs import mlr_market1501  # pylint: disable=g-import-not-at-top
  config = mlr_market1501.get_config()
  for dotted, value in values.items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def _benchmark(args):
  from pshrnet_jax import driver  # pylint: disable=g-import-not-at-top
  config = config_of(overrides(args))
  return config, driver.load_benchmark(
      config, os.path.join(args.scratch, "pipeline"))


def phase1_steps_per_epoch(args) -> int:
  from data_pipelines.pipeline import sampler  # pylint: disable=g-import-not-at-top
  _, benchmark = _benchmark(args)
  pids = [r.pid for r in benchmark.train if r.has_hr_original]
  return sampler.steps_per_epoch(np.array(pids), args.p, args.k)


def pipeline_part(args, record) -> None:
  from pshrnet_jax import workdir_layout  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.models import factory  # pylint: disable=g-import-not-at-top
  from scripts import input_timing  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  synthetic_set(args)
  drawn = time.perf_counter() - t0
  config, benchmark = _benchmark(args)
  record.info(set_draw_s=drawn, set_build_s=time.perf_counter() - t0 - drawn,
              train_records=len(benchmark.train), cores=os.cpu_count())
  say(f"  synthetic set: {len(benchmark.train)} training images at "
      f"{args.image_size[0]}x{args.image_size[1]}, drawn in {drawn:.1f} s")
  cache_dir = os.path.join(workdir_layout.data_build_dir(config, ""),
                           "image_cache")
  for phase, workers in ((1, args.workers), (2, args.workers), (2, 0)):
    timed = record.attempt(
        f"pipeline phase {phase} {workers} workers",
        input_timing.time_train_iterator, benchmark.train, workers=workers,
        steps=args.pipeline_steps, image_size=tuple(args.image_size),
        p=args.p, k=args.k, seed=config.seed, with_lr=phase == 2,
        lr_interpolation=factory.lr_interpolation(config),
        cache_dir=cache_dir, pad=config.data.pad, min_s=5)
    if timed:
      record.add(dict(kind="pipeline", phase=phase, workers=workers,
                      setup_s=timed[0], pairs_per_s=timed[1]))
      say(f"  pipeline phase {phase} ({'HR/LR pairs' if phase == 2 else 'HR'}"
          f"), {workers} workers: {timed[1]:,.0f} pairs/s")


class _PreemptAt(logging.Handler):
  """Sends this process SIGTERM when the loop logs step `step` (the loop's
  own preemption handling then saves a checkpoint and stops)."""

  def __init__(self, step: int, total: int):
    super().__init__(logging.INFO)
    self.line = f"phase1 step {step}/{total} "
    self.sent = False

  def emit(self, record):
    if not self.sent and record.getMessage().startswith(self.line):
      self.sent = True
      os.kill(os.getpid(), signal.SIGTERM)


def run_driver(workdir: str, values: dict, preempt_at: int | None = None,
               total: int = 0) -> dict:
  """`driver.run` of configs/mlr_market1501.py with `values`; with
  `preempt_at`, stopped there by SIGTERM. Returns its seconds and the step
  it stopped at (None: it ran to the end)."""
  from pshrnet_jax import driver  # pylint: disable=g-import-not-at-top
  from pshrnet_jax import errors  # pylint: disable=g-import-not-at-top
  logger = logging.getLogger("absl")
  hook = _PreemptAt(preempt_at, total) if preempt_at else None
  if hook:
    logger.addHandler(hook)
  start, stopped = time.perf_counter(), None
  try:
    driver.run(config_of(values), workdir)
  except errors.Preempted as e:
    stopped = e.step
  finally:
    if hook:
      logger.removeHandler(hook)
  if preempt_at and stopped is None:
    raise RuntimeError(f"the run in {workdir} was not stopped at step "
                       f"{preempt_at}")
  return {"seconds": time.perf_counter() - start, "stopped_at": stopped}


def prepare_process(args) -> None:
  """This process as `main` sets one up for `driver.run`: the persistent
  compilation cache, absl INFO records reaching the loggers (the terminal
  gets warnings only), and with `--pin_one_core` one core."""
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", args.compilation_cache
                    or os.path.join(args.scratch, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  absl_logging.set_verbosity(absl_logging.INFO)
  for handler in logging.getLogger().handlers + [
      absl_logging.get_absl_handler()]:
    handler.setLevel(logging.WARNING)
  if args.pin_one_core:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def read_intervals(workdir: str, first_log_step: int, pairs: int) -> dict:
  """Steps/s and input-wait share over the logged intervals after the
  first log step (from the run's TensorBoard scalars)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(
      os.path.join(workdir, "tensorboard", "phase1"),
      size_guidance={event_accumulator.SCALARS: 0})
  events.Reload()
  rates = [(e.step, e.value) for e in events.Scalars("perf/pairs_per_second")]
  waits = {e.step: e.value for e in events.Scalars("perf/input_wait_share")}
  steps = seconds = waited = 0.0
  previous = first_log_step
  for step, rate in rates:
    dt = (step - previous) * pairs / rate
    steps, seconds = steps + step - previous, seconds + dt
    waited += waits[step] * dt
    previous = step
  return {"timed_steps": int(steps), "timed_s": seconds,
          "steps_per_s": steps / seconds,
          "input_wait_share": waited / seconds, "intervals": len(rates)}


def _compare(a_dir: str, b_dir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from pshrnet_jax import convert  # pylint: disable=g-import-not-at-top
  a, b = (convert.restore_variables(d) for d in (a_dir, b_dir))
  if jax.tree.structure(a) != jax.tree.structure(b):
    raise RuntimeError(f"{a_dir} and {b_dir} hold different variables")
  leaves = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  differ = [np.abs(x.astype(np.float64) - y).max()
            for x, y in leaves if not np.array_equal(x, y)]
  return {"identical": not differ, "leaves": len(leaves),
          "leaves_differing": len(differ),
          "max_abs_diff": float(max(differ, default=0.0))}


def loop_epochs(args, spe: int) -> int:
  return max(2, -(-args.loop_steps // spe))


def _kill_and_resume(args, record, epochs: int, reference: str | None,
                     name: str) -> None:
  """The run of `epochs` epochs preempted half-way and resumed; compared
  with `reference` (an uninterrupted run's workdir; None: run one here)."""
  spe = phase1_steps_per_epoch(args)
  total = spe * epochs
  every = max(1, total // 3)
  stop_at = total // 2 + (1 if (total // 2) % every == 0 else 0)
  values = overrides(args, phase1_epochs=epochs, log_every_steps=1,
                     checkpoint_every_steps=every)
  flags = os.environ.get("XLA_FLAGS", "")
  say(f"  {name}: {total} steps, checkpoints every {every}, SIGTERM at step "
      f"{stop_at}, XLA_FLAGS {flags!r}")
  seconds = []
  if reference is None:
    reference = os.path.join(args.scratch, f"{name}_reference")
    seconds.append(run_driver(reference, values)["seconds"])
  workdir = os.path.join(args.scratch, f"{name}_stopped")
  first = run_driver(workdir, values, stop_at, total)
  second = run_driver(workdir, values)
  export = os.path.join("phase1", "teacher")
  row = dict(kind="resume", name=name, xla_flags=flags, steps=total,
             checkpoint_every=every, stopped_at=first["stopped_at"],
             reference=os.path.basename(reference),
             seconds=seconds + [first["seconds"], second["seconds"]],
             **_compare(os.path.join(reference, export),
                        os.path.join(workdir, export)))
  record.add(row)
  say(f"  {name}: preempted at step {row['stopped_at']} and resumed: "
      + ("bit-identical" if row["identical"] else
         f"{row['leaves_differing']} of {row['leaves']} arrays differ, "
         f"by at most {row['max_abs_diff']:.3g}"))


def loop_part(args, record) -> None:
  prepare_process(args)
  spe = phase1_steps_per_epoch(args)
  epochs = loop_epochs(args, spe)
  log_every = max(1, min(args.loop_log_every, spe * epochs // 4))
  values = overrides(args, phase1_epochs=epochs, log_every_steps=log_every,
                     checkpoint_every_steps=10**9)
  workdir = os.path.join(args.scratch, "loop")
  say(f"  loop: {epochs} epochs x {spe} steps, {args.workers} grain "
      f"workers, {args.loop_dtype}, a log line every {log_every} steps")
  ran = run_driver(workdir, values)
  row = dict(kind="loop", dtype=args.loop_dtype, steps=epochs * spe,
             steps_per_epoch=spe, log_every=log_every, workers=args.workers,
             run_s=ran["seconds"],
             **read_intervals(workdir, log_every, args.p * args.k))
  record.add(row)
  say(f"  loop: {row['steps_per_s']:.2f} steps/s over {row['timed_steps']} "
      f"steps, input wait {100 * row['input_wait_share']:.1f}%; the run "
      f"took {row['run_s']:.0f} s")
  # Two more runs of these steps, compiled already (the persistent cache).
  record.attempt("resume", _kill_and_resume, args, record, epochs, workdir,
                 "resume", min_s=1.2 * row["timed_s"] * row["steps"]
                 / row["timed_steps"] + 30)


def _loop_resume_row(args) -> dict | None:
  """The loop part's (e) row, if that part recorded one."""
  path = os.path.join(args.scratch, "loop.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = json.load(f)["rows"]
  return next((r for r in rows if r.get("name") == "resume"), None)


def resume_part(args, record) -> None:
  prepare_process(args)
  loop = os.path.join(args.scratch, "loop")
  same = (not args.added_flags and os.path.isdir(loop) and args.resume_epochs
          == loop_epochs(args, phase1_steps_per_epoch(args)))
  ran = _loop_resume_row(args) if same else None
  if ran is not None and ran["identical"]:
    # Without flags of its own this part is the loop part's (e) exactly:
    # the same command, epochs and XLA_FLAGS, and that run came out
    # bit-identical. Running the same program again adds nothing (the
    # suite's CPU smoke is such a case); the row says it is that run's.
    record.add(dict(ran, name="resume_deterministic", reference="loop",
                    same_run_as="resume", seconds=[]))
    say("  resume_deterministic: no XLA flags of its own, so the loop "
        "part's (e), bit-identical, is this part's result")
    return
  # Without flags of its own, the loop part's run is this one's reference.
  _kill_and_resume(args, record, args.resume_epochs, loop if same else None,
                   "resume_deterministic")
