"""The training loop of one phase (`phases.Phase`): data, state, steps,
checkpoints, export."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Mapping

import jax
import ml_collections
from absl import logging
from flax import linen as nn

from data_pipelines import pipeline
from data_pipelines.records import Benchmark
from pshrnet_jax import console
from pshrnet_jax import convert
from pshrnet_jax import workdir_layout
from pshrnet_jax.errors import CheckpointMismatchError
from pshrnet_jax.errors import NonFiniteLossError
from pshrnet_jax.errors import Preempted
from pshrnet_jax.models import factory
from pshrnet_jax.training import checkpoint
from pshrnet_jax.training import initialization
from pshrnet_jax.training import metric_writers
from pshrnet_jax.training import optim
from pshrnet_jax.training import preemption
from pshrnet_jax.training import sharding
from pshrnet_jax.training import steps
from pshrnet_jax.training.phases import Phase


@dataclasses.dataclass(frozen=True)
class PhaseStep:
  """What a phase trains with, built once per run (`build_step`); `step` is
  `step(state, batch, rng[, teacher_variables]) -> (state, metrics)`, jitted
  over the mesh; `teacher` is None for a phase without one."""
  model: nn.Module
  teacher: nn.Module | None
  optimizer: optim.Optimizer
  abstract_variables: dict[str, Any]
  step: Callable[..., Any]


def build_step(config: ml_collections.ConfigDict, phase: Phase,
               num_classes: int, steps_per_epoch: int, mesh) -> PhaseStep:
  """The phase's model, optimiser and jitted step, for M = `num_classes`."""
  model = phase.build_model(config.model, num_classes)
  teacher = (factory.build_teacher(config.model, num_classes)
             if phase.steps_with_teacher(config) else None)
  abstract_vars = factory.abstract_variables(
      model, (1, *config.data.image_size, 3))
  optim_config = ml_collections.ConfigDict(config.optim.to_dict())
  optim_config.epochs = phase.epochs(config)
  optimizer = optim.make_optimizer(optim_config, abstract_vars["params"],
                                   steps_per_epoch)
  bound = dict(model=model, tx=optimizer.tx,
               loss_config=config.loss.to_dict())
  if phase.uses_teacher:
    bound["teacher"] = teacher
  # What `bound` is made of: an equal phase built again shares the trace.
  key = (model, teacher, steps_per_epoch,
         ml_collections.FrozenConfigDict(optim_config),
         ml_collections.FrozenConfigDict(config.loss))
  step_fn = steps.jit_step(
      phase.step, sharding.replicated(mesh), sharding.batch_sharded(mesh),
      key=key, num_extra_args=int(teacher is not None), **bound)
  return PhaseStep(model, teacher, optimizer, abstract_vars, step_fn)


def config_settings(config: ml_collections.ConfigDict,
                    phase: Phase) -> dict[str, Any]:
  """The part of `run_settings` the config alone decides."""
  d = config.data
  data = {key: d[key] for key in ("name", "image_size", "p", "k",
                                  "lr_interpolation", "pad", "seed",
                                  "split_index", "skip_unreadable")}
  data["options"] = d.options.to_dict()
  optim = config.optim.to_dict()
  optim.pop("epochs")
  return {"phase": phase.name, "seed": config.seed,
          "model": config.model.to_dict(), "loss": config.loss.to_dict(),
          "optim": optim, "data": data,
          "student_init": config.student_init if phase.student_init else None}


def run_settings(config: ml_collections.ConfigDict, phase: Phase,
                 num_classes: int, steps_per_epoch: int,
                 teacher_variables: Mapping[str, Any] | None
                 ) -> dict[str, Any]:
  """Every setting a phase's state or maths depends on, for its checkpoints:
  a resume with any of them changed is refused. Left out on purpose (they may
  change between starts): epochs, logging, checkpointing, the dataset's
  location, worker counts, the compilation cache; the input iterator's
  fingerprint checks the data itself."""
  settings = dict(config_settings(config, phase), num_classes=num_classes,
                  steps_per_epoch=steps_per_epoch)
  if teacher_variables is not None:
    settings["teacher_fingerprint"] = convert.fingerprint(teacher_variables)
  return settings


def check_resumable(config: ml_collections.ConfigDict, workdir: str,
                    phase: Phase) -> None:
  """Refuses, before any data is read, a workdir whose latest checkpoint of
  `phase` was written with other settings (those the config decides), or
  is further on than the steps the config asks for."""
  directory = phase.checkpoint_dir(workdir)
  latest = checkpoint.latest_settings(directory)
  if latest is None:
    return
  step, saved = latest
  expected = config_settings(config, phase)
  checkpoint.check_settings({k: saved.get(k) for k in expected}, expected,
                            directory)
  per_epoch, epochs = saved.get("steps_per_epoch"), phase.epochs(config)
  if isinstance(per_epoch, int) and step > epochs * per_epoch:
    raise CheckpointMismatchError(
        f"{phase.name}: the checkpoint {directory}/{step} is at step {step} "
        f"({per_epoch} steps per epoch), but --config."
        f"{phase.epochs_flag(config)}={epochs} asks for {epochs * per_epoch}"
        f" steps; a run cannot train backwards. Ask for "
        f"{-(-step // per_epoch)} epochs or more to continue it, or use a "
        "new --workdir; nothing was changed on disk.")


def _check_finite(phase: str, step: int, metrics: Mapping[str, float],
                  ckpt: checkpoint.PhaseCheckpointer) -> None:
  """Stops before a non-finite state is logged as fine or saved."""
  bad = [k for k in ("loss", "grad_norm")
         if not math.isfinite(metrics.get(k, 0.0))]
  if metrics.get("params_finite", 1.0) != 1.0:
    bad.append("updated parameters")
  if not bad:
    return
  terms = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
  raise NonFiniteLossError(
      f"{phase}: the training state became non-finite by step {step} "
      f"({', '.join(bad)}; {terms}). Nothing was saved from it: checkpoints "
      f"in {ckpt.directory} were left as they were (last finite checkpoint: "
      f"step {ckpt.latest_step()}). Lower the learning rates or check the "
      "data.")


def train_phase(config: ml_collections.ConfigDict, workdir: str, phase: Phase,
                benchmark: Benchmark, sources: Mapping[str, Any], mesh, *,
                ready: Callable[[], None] | None = None) -> dict[str, Any]:
  """Trains one phase to completion (resuming if possible).

  Args:
    config: the run config.
    workdir: the run's workdir.
    phase: the phase.
    benchmark: the data; `benchmark.train` is trained on.
    sources: random-access image sources per split (may be empty).
    mesh: the data-parallel mesh.
    ready: called just before the first step, once every check that can
      refuse the run has passed.

  Returns:
    The trained model's final {'params', 'batch_stats'}.
  """
  d = config.data
  global_batch = d.p * d.k
  sharding.check_global_batch(global_batch, mesh)
  image_size = tuple(d.image_size)
  teacher_variables = None
  if phase.reads_teacher(config):
    # A missing or unfitting teacher fails before any work or write.
    teacher_variables = initialization.restore_teacher(config, workdir)
    teacher = factory.build_teacher(config.model,
                                    len({r.pid for r in benchmark.train}))
    factory.check_fits(
        teacher_variables,
        factory.abstract_variables(teacher, (1, *image_size, 3)),
        f"The phase-1 teacher {workdir_layout.teacher_dir(config, workdir)}")
  data_iter = pipeline.make_train_iterator(
      benchmark.train, image_size=image_size, p=d.p, k=d.k,
      seed=config.seed, with_lr=phase.uses_teacher,
      lr_interpolation=factory.lr_interpolation(config),
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      worker_count=d.worker_count, source=sources.get("train"), pad=d.pad,
      cache_dir=os.path.join(workdir_layout.data_build_dir(config, workdir),
                             "image_cache"))
  num_classes = data_iter.num_classes
  built = build_step(config, phase, num_classes, data_iter.steps_per_epoch,
                     mesh)
  epochs = phase.epochs(config)
  total_steps = epochs * data_iter.steps_per_epoch
  logging.info("%s parameter groups:\n%s", phase.name,
               built.optimizer.summary)

  replicated = sharding.replicated(mesh)
  settings = run_settings(config, phase, num_classes,
                          data_iter.steps_per_epoch, teacher_variables)
  ckpt = checkpoint.PhaseCheckpointer(
      phase.checkpoint_dir(workdir),
      max_to_keep=config.train.max_checkpoints_to_keep)
  abstract_state = jax.eval_shape(
      lambda v: steps.create_state(v, built.optimizer.tx),
      built.abstract_variables)
  restored = ckpt.restore_latest(
      checkpoint.abstract_like(abstract_state, replicated), settings)
  if restored is not None:
    latest, state, data_state = restored
    data_iter.set_state(data_state)
    logging.info("%s: resumed from step %d of %d.", phase.name, latest,
                 total_steps)
  else:
    variables = initialization.initial_variables(
        config, phase, built.model, built.abstract_variables, workdir,
        teacher_variables)
    state = sharding.put_replicated(
        steps.create_state(variables, built.optimizer.tx), mesh)
  extra = ((sharding.put_replicated(teacher_variables, mesh),)
           if built.teacher is not None else ())
  if ready is not None:
    ready()

  rng = sharding.put_replicated(jax.random.key(config.seed + 1), mesh)
  step = start_step = int(jax.device_get(state.step))
  logging.info("%s: %d epochs x %d steps of %d pairs (P=%d x K=%d) on %d "
               "device(s).", phase.name, epochs, data_iter.steps_per_epoch,
               global_batch, d.p, d.k, mesh.devices.size)
  if jax.process_index() == 0:
    num_params = sum(x.size for x in
                     jax.tree.leaves(built.abstract_variables["params"]))
    console.say(
        f"{phase.name} ({phase.role}, {phase.loss_name}): "
        f"{type(built.model).__name__} width {config.model.width}, "
        f"{num_params:,} parameters; {epochs} epochs x "
        f"{data_iter.steps_per_epoch} steps of {global_batch} pairs on "
        f"{mesh.devices.size} device(s)"
        + (f"; resumed at step {start_step}" if start_step else "")
        + (" (done)" if start_step >= total_steps else ""))
  writer = metric_writers.ProgressWriter(
      workdir, phase.name, total_steps=total_steps,
      steps_per_epoch=data_iter.steps_per_epoch, pairs_per_step=global_batch,
      every_steps=config.train.log_every_steps, start_step=start_step)
  try:
    with preemption.PreemptionWatch() as preempted:
      while step < total_steps:
        # Time blocked on the input pipeline (an upper bound on the
        # device's wait: it may still be running earlier steps).
        waiting = time.perf_counter()
        host_batch = next(data_iter)
        writer.add_input_wait(time.perf_counter() - waiting)
        batch = sharding.put_batch(host_batch, mesh)
        state, metrics = built.step(state, batch, rng, *extra)
        step += 1
        stop = preempted.requested(step)
        save = (step % config.train.checkpoint_every_steps == 0
                or step == total_steps or stop)
        # The host waits for the device only here: at log and save steps.
        if save or writer.should_write(step):
          host = {k: float(v) for k, v in jax.device_get(metrics).items()}
          _check_finite(phase.name, step, host, ckpt)
          del host["params_finite"]
          if writer.should_write(step):
            # The update of step `step` used the schedule at `step - 1`.
            writer.write(step, host, {
                k: float(v)
                for k, v in built.optimizer.learning_rates(step - 1).items()})
        if save:
          logging.info("%s: saving checkpoint %d to %s.", phase.name, step,
                       ckpt.directory)
          ckpt.save(step, state, data_iter.get_state(), settings,
                    force=step == total_steps or stop)
        if stop:
          ckpt.close()  # The checkpoint of this step is complete.
          raise Preempted(phase.name, step, preempted.signal_name,
                          ckpt.directory)
    ckpt.close()
  finally:
    writer.close()
    ckpt.abandon()  # After an error: stop Orbax's threads, raise nothing.
    data_iter.close()  # And the input pipeline's threads and workers.
  variables = {"params": jax.device_get(state.params),
               "batch_stats": jax.device_get(state.batch_stats)}
  # Every process logs it: with several, they must all say the same.
  logging.info("%s: final variables fingerprint %s (process %d of %d).",
               phase.name, convert.fingerprint(variables),
               jax.process_index(), jax.process_count())
  if jax.process_index() == 0:
    description = dict(
        factory.describe(built.model), kind=phase.role,
        image_size=list(image_size),
        lr_interpolation=factory.lr_interpolation(config), benchmark=d.name)
    export(variables, phase.export_dir(workdir), phase.name, description,
           trained=step > start_step)
  return variables


def export(variables: Mapping[str, Any], export_dir: str, phase: str,
           description: Mapping[str, Any], *, trained: bool) -> None:
  """Saves the final variables and their model description; an existing
  export is replaced (as a whole) only if this run trained past it."""
  exists = os.path.exists(export_dir)
  if exists and not trained:
    return
  logging.info("%s: exporting the %s to %s.", phase, description["kind"],
               export_dir)
  convert.save_variables(variables, export_dir, description, replace=exists,
                         info_file=workdir_layout.MODEL_FILE)
  if exists:
    logging.warning("%s: replaced the earlier export %s with this run's "
                    "final variables.", phase, export_dir)
  else:
    logging.info("%s: final variables saved to %s.", phase, export_dir)
