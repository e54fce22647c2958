"""Two-phase PS-HRNet training and the run driver behind `main`.

Phase 1 trains the HR teacher (HRNet-ReID-H) with L_ID; phase 2 trains the
student (VDSR-CA -> HRNet-ReID-L) on HR/LR pairs with L_TOTAL against the
frozen teacher. The two phases are one loop with two step functions; what
differs is the initialisation order, which follows STYLE.md: resume from the
workdir's checkpoint, else the configured initial weights (ImageNet HRNet or
the phase-1 teacher), else random.

Workdir layout:
  config.json                resolved config of the last start
  phase1/checkpoints/<step>  Orbax: state, data-iterator state, meta
  phase1/teacher             the final teacher variables (convert.save_variables)
  phase2/checkpoints/<step>
  phase2/student             the final student variables
  tensorboard/{phase1,phase2}
  results.json, results.md, cmc.png, ranked_list.png
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from data_pipelines import benchmarks as benchmark_registry
from data_pipelines import pipeline
from data_pipelines.records import Benchmark
from pshrnet_jax import checkpoint
from pshrnet_jax import convert
from pshrnet_jax import eval_run
from pshrnet_jax import metric_writers
from pshrnet_jax import models
from pshrnet_jax import optim
from pshrnet_jax import sharding
from pshrnet_jax import steps

MODES = ("phase1", "phase2", "eval", "all")


class ConfigError(ValueError):
  """A config value the run cannot use (the message names the flag)."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf; the last good checkpoint is kept."""


class MissingTeacherError(FileNotFoundError):
  """Phase 2 (or evaluation) was asked for without a phase-1 teacher."""


def _dtype(config: ml_collections.ConfigDict):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[
      config.model.compute_dtype]


def build_teacher(config: ml_collections.ConfigDict, num_classes: int):
  """HRNet-ReID (no SR): the phase-1 model and the frozen teacher."""
  m = config.model
  return models.HRNetReID(width=m.width, num_classes=num_classes,
                          pooling=m.pooling, head_planes=tuple(m.head_planes),
                          dropout_rate=m.dropout_rate, dtype=_dtype(config))


def build_student(config: ml_collections.ConfigDict, num_classes: int):
  """PS-HRNet: VDSR-CA (or the configured SR module) -> HRNet-ReID."""
  m = config.model
  return models.PSHRNet(width=m.width, num_classes=num_classes,
                        pooling=m.pooling, head_planes=tuple(m.head_planes),
                        dropout_rate=m.dropout_rate, sr_module=m.sr_module,
                        sr_blocks=m.sr_blocks, sr_features=m.sr_features,
                        dtype=_dtype(config))


def data_build_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Where built data (MLR images, TFDS files, image caches) goes."""
  return config.data.build_dir or os.path.join(workdir, "data")


def data_sources(config: ml_collections.ConfigDict, workdir: str,
                 benchmark: Benchmark) -> dict[str, Any]:
  """Random-access image sources per split ('train', 'query', 'gallery').

  With `data.source='tfds'` the benchmark is packed once into ArrayRecord
  files (tensorflow-datasets, no TensorFlow needed) and read from there;
  with 'files' the pipelines read the image files directly. Either way the
  decoded, resized images are cached under the build dir on first use.
  """
  if config.data.source == "files":
    return {}
  if config.data.source != "tfds":
    raise ConfigError(f"--config.data.source={config.data.source!r}; "
                      "expected 'tfds' or 'files'.")
  from data_pipelines import tfds_builder  # pylint: disable=g-import-not-at-top
  return tfds_builder.prepare_benchmark_source(
      benchmark, os.path.join(data_build_dir(config, workdir), "tfds"))


def load_benchmark(config: ml_collections.ConfigDict, workdir: str) -> Benchmark:
  """Reads (and on first use builds) the configured benchmark."""
  d = config.data
  build_dir = data_build_dir(config, workdir)
  options = d.options.to_dict()
  if d.lr_root:
    options["lr_root"] = d.lr_root
  if d.skip_unreadable:
    options["skip_unreadable"] = True
  return benchmark_registry.load_benchmark(
      d.name, d.root, build_dir=build_dir, seed=d.seed,
      split_index=d.split_index, options=options)


def _initial_variables(config, phase: str, model, num_classes: int,
                       image_size, workdir: str) -> dict[str, Any]:
  """Random init, then the configured initial weights on top."""
  dummy = jnp.zeros((1, *image_size, 3), jnp.float32)
  rng = jax.random.key(config.seed)
  # Eagerly, not jitted: XLA:CPU spends minutes compiling one program with
  # every initialiser's RNG, while op-by-op init reuses small cached kernels
  # (measured 2.5x faster for the demo model; W32 is slower still under jit).
  variables = model.init(rng, dummy, train=False)
  variables = jax.tree.map(np.asarray, dict(variables))
  if phase == "phase2" and config.student_init == "teacher":
    teacher_vars = restore_teacher(config, workdir)
    logging.info("Student HRNet-ReID initialised from the phase-1 teacher.")
    return convert.student_from_teacher(teacher_vars, variables)
  if not config.init_from:
    logging.info("%s: random initialisation (no --config.init_from).", phase)
    return variables
  imagenet = load_init_weights(config.init_from)
  if phase == "phase1":
    logging.info("Teacher initialised from ImageNet HRNet %s.", config.init_from)
    return convert.reid_from_imagenet(imagenet, variables)
  logging.info("Student HRNet-ReID initialised from ImageNet HRNet %s.",
               config.init_from)
  reid = {k: v["reid"] for k, v in variables.items() if "reid" in v}
  reid = convert.reid_from_imagenet(imagenet, reid)
  return {k: dict(v, reid=reid[k]) if k in reid else v
          for k, v in variables.items()}


def load_init_weights(path: str) -> dict[str, Any]:
  """ImageNet HRNet-W*-C variables from an Orbax dir or a PyTorch .pth."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config.init_from={path} does not exist.")
  if os.path.isdir(path):
    return convert.restore_variables(path)
  return convert.load_torch_hrnet(path)


def teacher_dir(config, workdir: str) -> str:
  return config.teacher_dir or os.path.join(workdir, "phase1", "teacher")


def restore_teacher(config, workdir: str) -> dict[str, Any]:
  path = teacher_dir(config, workdir)
  if not os.path.isdir(path):
    raise MissingTeacherError(
        f"Phase 2 needs the phase-1 teacher, but {path} does not exist. Run "
        "phase 1 first (--config.mode=phase1 or all) in this --workdir, or "
        "point --config.teacher_dir at a teacher saved by phase 1.")
  return convert.restore_variables(path)


def _phase_epochs(config, phase: str) -> int:
  override = config.train.get(f"{phase}_epochs")
  return int(override) if override is not None else int(config.optim.epochs)


def train_phase(config: ml_collections.ConfigDict, workdir: str, phase: str,
                benchmark: Benchmark, sources: Mapping[str, Any],
                mesh) -> dict[str, Any]:
  """Trains one phase to completion (resuming if possible).

  Returns:
    The final variables ({'params', 'batch_stats'}) of the trained model.
  """
  d = config.data
  global_batch = d.p * d.k
  sharding.check_global_batch(global_batch, mesh)
  teacher_variables = None
  if phase == "phase2":
    # Before any work (image decoding, compiling) and before anything is
    # written under WORKDIR/phase2: a missing teacher fails at once.
    teacher_variables = restore_teacher(config, workdir)
  data_iter = pipeline.make_train_iterator(
      benchmark.train, image_size=tuple(d.image_size), p=d.p, k=d.k,
      seed=config.seed, with_lr=(phase == "phase2"),
      lr_interpolation=d.lr_interpolation,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      worker_count=d.worker_count, source=sources.get("train"), pad=d.pad,
      cache_dir=os.path.join(data_build_dir(config, workdir), "image_cache"))
  num_classes = data_iter.num_classes
  model = (build_teacher if phase == "phase1" else build_student)(
      config, num_classes)
  epochs = _phase_epochs(config, phase)
  total_steps = epochs * data_iter.steps_per_epoch
  optim_config = ml_collections.ConfigDict(config.optim.to_dict())
  optim_config.epochs = epochs

  # Shapes only: no compute until we know whether a checkpoint exists.
  image_size = tuple(d.image_size)
  abstract_vars = jax.eval_shape(
      lambda: model.init(jax.random.key(0),
                         jnp.zeros((1, *image_size, 3)), train=False))
  optimizer = optim.make_optimizer(optim_config, abstract_vars["params"],
                                   data_iter.steps_per_epoch)
  logging.info("%s parameter groups:\n%s", phase, optimizer.summary)
  replicated = sharding.replicated(mesh)
  meta = {"phase": phase, "width": config.model.width,
          "head_planes": list(config.model.head_planes),
          "sr_module": config.model.sr_module, "num_classes": num_classes,
          "image_size": list(image_size), "global_batch": global_batch,
          "steps_per_epoch": data_iter.steps_per_epoch}
  ckpt = checkpoint.PhaseCheckpointer(
      os.path.join(workdir, phase, "checkpoints"),
      max_to_keep=config.train.max_checkpoints_to_keep)
  latest = ckpt.latest_step()
  if latest is not None:
    abstract_state = jax.eval_shape(
        lambda v: steps.create_state(v, optimizer.tx), abstract_vars)
    state, data_state = ckpt.restore(
        latest, checkpoint.abstract_like(abstract_state, replicated), meta)
    data_iter.set_state(data_state)
    logging.info("%s: resumed from step %d of %d.", phase, latest, total_steps)
  else:
    variables = _initial_variables(config, phase, model, num_classes,
                                   image_size, workdir)
    state = sharding.put_replicated(
        steps.create_state(variables, optimizer.tx), mesh)

  if phase == "phase1":
    step_fn = steps.jit_step(steps.phase1_step, replicated,
                             sharding.batch_sharded(mesh), model=model,
                             tx=optimizer.tx, loss_config=config.loss.to_dict())
    extra = ()
  else:
    teacher = build_teacher(config, num_classes)
    teacher_vars = sharding.put_replicated(teacher_variables, mesh)
    step_fn = steps.jit_step(steps.phase2_step, replicated,
                             sharding.batch_sharded(mesh), num_extra_args=1,
                             student=model, teacher=teacher, tx=optimizer.tx,
                             loss_config=config.loss.to_dict())
    extra = (teacher_vars,)

  rng = sharding.put_replicated(jax.random.key(config.seed + 1), mesh)
  writer = metric_writers.ProgressWriter(
      workdir, phase, total_steps=total_steps,
      steps_per_epoch=data_iter.steps_per_epoch, pairs_per_step=global_batch,
      every_steps=config.train.log_every_steps)
  step = start_step = int(jax.device_get(state.step))
  logging.info("%s: %d epochs x %d steps of %d pairs (P=%d x K=%d) on %d "
               "device(s).", phase, epochs, data_iter.steps_per_epoch,
               global_batch, d.p, d.k, mesh.devices.size)
  while step < total_steps:
    batch = sharding.put_batch(next(data_iter), mesh)
    state, metrics = step_fn(state, batch, rng, *extra)
    step += 1
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      ckpt.close()
      raise NonFiniteLossError(
          f"{phase}: the loss became {loss} at step {step} (terms: {metrics})."
          f" Checkpoints in {ckpt.directory} were left as they were (last "
          f"good step: {ckpt.latest_step()}). Lower the learning rates or "
          "check the data.")
    if writer.should_write(step):
      writer.write(step, {k: float(v) for k, v in
                          jax.device_get(metrics).items()},
                   {k: float(v) for k, v in
                    optimizer.learning_rates(step).items()})
    if step % config.train.checkpoint_every_steps == 0 or step == total_steps:
      ckpt.save(step, state, data_iter.get_state(), meta,
                force=step == total_steps)
  ckpt.close()
  writer.close()
  variables = {"params": jax.device_get(state.params),
               "batch_stats": jax.device_get(state.batch_stats)}
  export_dir = os.path.join(workdir, phase,
                            "teacher" if phase == "phase1" else "student")
  if jax.process_index() == 0:
    _export(variables, export_dir, phase, replace=step > start_step)
  return variables


def _export(variables, export_dir: str, phase: str, *, replace: bool) -> None:
  """Saves the phase's final variables; an existing export is kept unless
  this run trained past it (e.g. resumed with more epochs), so phase 2 and
  evaluation never read a stale teacher or student."""
  if os.path.exists(export_dir) and not replace:
    return
  if os.path.exists(export_dir):
    fresh = export_dir + ".new"
    shutil.rmtree(fresh, ignore_errors=True)  # Left by a killed export.
    convert.save_variables(variables, fresh)
    stale = export_dir + ".old"
    shutil.rmtree(stale, ignore_errors=True)
    os.rename(export_dir, stale)
    os.rename(fresh, export_dir)
    shutil.rmtree(stale)
    logging.warning("%s: replaced the earlier export %s with this run's "
                    "final variables.", phase, export_dir)
    return
  convert.save_variables(variables, export_dir)
  logging.info("%s: final variables saved to %s.", phase, export_dir)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config beside the run's outputs."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, indent=2, default=str)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the configured mode: phase 1, phase 2, evaluation, or all in order.

  Returns:
    The evaluation results (empty if the mode does not evaluate).
  """
  if config.mode not in MODES:
    raise ConfigError(
        f"--config.mode={config.mode!r}; expected one of {MODES}.")
  save_config(config, workdir)
  mesh = sharding.make_data_mesh(config.num_devices or None)
  benchmark = load_benchmark(config, workdir)
  logging.info("Benchmark %s: %d train, %d query, %d gallery images.",
               benchmark.name, len(benchmark.train), len(benchmark.query),
               len(benchmark.gallery))
  sources = data_sources(config, workdir, benchmark)
  if config.mode in ("phase1", "all"):
    train_phase(config, workdir, "phase1", benchmark, sources, mesh)
  if config.mode in ("phase2", "all") and not config.hr_only:
    train_phase(config, workdir, "phase2", benchmark, sources, mesh)
  if config.mode in ("eval", "all"):
    return eval_run.evaluate_workdir(config, workdir, benchmark, sources)
  return {}
