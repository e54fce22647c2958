"""The run behind `python -m pshrnet_jax.main`: data, phase 1, phase 2, eval.

    from pshrnet_jax import driver
    results = driver.run(config, workdir)

`run` checks the config, takes the workdir's lock, reads (and on first use
builds) the configured benchmark, trains the phases the mode asks for,
evaluates, and returns the evaluation results. Everything it writes goes
under the workdir (`workdir_layout`); a run that stops on bad input leaves
what the workdir held as it was: `config.json` is written only once the
first phase (or the evaluation) is ready to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from typing import Any, Iterator

import jax
import ml_collections
from absl import logging

from data_pipelines import benchmarks as benchmark_registry
from data_pipelines.records import Benchmark
from pshrnet_jax import compile_stats
from pshrnet_jax import config_checks
from pshrnet_jax import console
from pshrnet_jax import workdir_layout
from pshrnet_jax.errors import ConfigError
from pshrnet_jax.errors import WorkdirBusyError
from pshrnet_jax.evaluation import workdir_eval
from pshrnet_jax.training import initialization
from pshrnet_jax.training import loop
from pshrnet_jax.training import phases
from pshrnet_jax.training import sharding


def load_benchmark(config: ml_collections.ConfigDict,
                   workdir: str) -> Benchmark:
  """Reads (and on first use builds) the configured benchmark."""
  d = config.data
  options = d.options.to_dict()
  if d.lr_root:
    options["lr_root"] = d.lr_root
  if d.skip_unreadable:
    options["skip_unreadable"] = True
  return benchmark_registry.load_benchmark(
      d.name, d.root, build_dir=workdir_layout.data_build_dir(config, workdir),
      seed=d.seed, split_index=d.split_index, options=options)


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
  # Imported here: tensorflow-datasets takes seconds to import.
  from data_pipelines import tfds_builder  # pylint: disable=g-import-not-at-top
  return tfds_builder.prepare_benchmark_source(
      benchmark,
      os.path.join(workdir_layout.data_build_dir(config, workdir), "tfds"))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config beside the run's outputs (atomically)."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, workdir_layout.CONFIG_FILE)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(config.to_dict(), f, indent=2, default=str)
  os.replace(tmp, path)


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """Holds an exclusive lock on the workdir for the run's lifetime.

  The lock is an flock on the folder itself (no lock file is written), so a
  second run started on the same workdir stops at once instead of writing
  beside the first; it is released when the process ends, however it ends.
  Only process 0 of a multi-process run takes it.

  Raises:
    WorkdirBusyError: another run holds the workdir.
    ConfigError: the workdir cannot be created (e.g. a file is in the way).
  """
  if jax.process_index() != 0:
    yield
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(workdir, os.O_RDONLY)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} cannot be used as a folder: "
                      f"{e.strerror}.") from e
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(
          f"--workdir={workdir} is in use by another run (it holds the "
          "workdir's lock). Wait for it to finish, or use another "
          "--workdir.") from None
    yield
  finally:
    os.close(fd)


def _check_writable(workdir: str) -> None:
  """Fails early, and clearly, on a workdir nothing can be written to."""
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=workdir))
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} is not writable: "
                      f"{e.strerror or e}.") from e


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the configured mode: phase 1, phase 2, evaluation, or all in order.

  Args:
    config: a config from `configs/` (with overrides).
    workdir: where everything is written; a second run resumes from it.

  Returns:
    The evaluation results (the content of results.json; empty if the mode
    does not evaluate).
  """
  config_checks.check_config(config)
  with workdir_lock(workdir):
    if jax.process_index() == 0:
      _check_writable(workdir)
    mesh = sharding.make_data_mesh(config.num_devices or None)
    sharding.check_global_batch(config.data.p * config.data.k, mesh)
    to_train = phases.to_train(config)
    # Before reading (or building) any data.
    if phases.STUDENT in to_train and phases.TEACHER not in to_train:
      initialization.require_teacher(config, workdir)
    for phase in to_train:
      loop.check_resumable(config, workdir, phase)
    benchmark = load_benchmark(config, workdir)
    logging.info("Benchmark %s: %d train, %d query, %d gallery images.",
                 benchmark.name, len(benchmark.train), len(benchmark.query),
                 len(benchmark.gallery))
    sources = data_sources(config, workdir, benchmark)
    saved = []

    def ready() -> None:
      # The first phase (or the evaluation) passed its checks: from here
      # on the workdir belongs to this configuration.
      if not saved:
        save_config(config, workdir)
        if jax.process_index() == 0:
          console.start_workdir_log(workdir)
        saved.append(True)

    for phase in to_train:
      with _compile_report(phase.name, show=True):
        loop.train_phase(config, workdir, phase, benchmark, sources, mesh,
                         ready=ready)
    if config.mode in ("eval", "all"):
      # In log.txt only: the console ends with the results.
      with _compile_report("evaluation", show=False):
        return workdir_eval.evaluate_workdir(config, workdir, benchmark,
                                             sources, ready=ready)
    return {}


@contextlib.contextmanager
def _compile_report(part: str, show: bool) -> Iterator[None]:
  """Logs what `part` spent tracing and compiling (and how much of it the
  persistent cache served) in log.txt, and with `show` on the console."""
  compile_stats.install()
  before = compile_stats.snapshot()
  yield
  stats = compile_stats.since(before)
  logging.info("%s: %s.", part, stats.describe())
  if show and jax.process_index() == 0 and stats.programs:
    console.say(f"{part}: compiling took {stats.total_s:.0f} s "
                f"({stats.programs} programs, {stats.cache_hits} from the "
                f"cache)")
