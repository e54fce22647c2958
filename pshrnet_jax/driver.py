"""The run behind `python -m pshrnet_jax.main`: `run(config, workdir)` checks
the config, locks the workdir, reads the benchmark, trains the mode's phases
and evaluates. A run stopped by bad input leaves the workdir as it was:
`config.json` and log.txt are written once the first part is ready to start,
the workdir's marker once the data is built; a folder that holds files and
is not a workdir of this project is refused before anything is written.
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

from data_pipelines import atomic
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
  """Random-access image sources per split: with `data.source='tfds'` the
  benchmark packed once into ArrayRecord files; none with 'files'."""
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
  with atomic.atomic_file(
      os.path.join(workdir, workdir_layout.CONFIG_FILE)) as tmp:
    with open(tmp, "w") as f:
      json.dump(config.to_dict(), f, indent=2, default=str)


# The sections of the config.json every run of this project writes: a
# workdir made before the marker existed is recognised by them.
_CONFIG_SECTIONS = ("model", "data", "loss", "optim", "train", "eval")


def _is_project_config(path: str) -> bool:
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(saved, dict) and "mode" in saved and all(
      isinstance(saved.get(k), dict) for k in _CONFIG_SECTIONS)


def _some_files(folder: str, limit: int = 5) -> list[str]:
  """Up to `limit` files under `folder` (empty sub-folders hold nothing)."""
  found = []
  for root, dirs, names in os.walk(folder):
    dirs.sort()
    found += [os.path.relpath(os.path.join(root, n), folder)
              for n in sorted(names)]
    if len(found) >= limit:
      break
  return found[:limit]


def check_workdir(workdir: str) -> None:
  """Refuses a --workdir that holds files and is not a workdir of this
  project (its marker, or a config.json this project wrote): a run writes
  config.json, log.txt and more into it.

  Raises:
    ConfigError: the folder holds someone else's files (a few are named).
  """
  if jax.process_index() != 0 or not os.path.isdir(workdir):
    return  # Missing: created; a file: workdir_lock names it.
  if os.path.exists(os.path.join(workdir, workdir_layout.MARKER_FILE)) or (
      _is_project_config(os.path.join(workdir, workdir_layout.CONFIG_FILE))):
    return
  found = _some_files(workdir)
  if found:
    raise ConfigError(
        f"--workdir={workdir} holds files and is not a workdir of this "
        f"project (found {', '.join(found)}, and no "
        f"{workdir_layout.MARKER_FILE}); a run would write config.json, "
        "log.txt and checkpoints into it. Nothing was written: give a new "
        "or empty folder, or a workdir an earlier run made.")


def claim_workdir(workdir: str) -> None:
  """Marks `workdir` as this project's (process 0, once)."""
  path = os.path.join(workdir, workdir_layout.MARKER_FILE)
  if jax.process_index() != 0 or os.path.exists(path):
    return
  with atomic.atomic_file(path) as tmp:
    with open(tmp, "w") as f:
      json.dump({"project": "pshrnet_jax", "what": "a workdir of "
                 "python -m pshrnet_jax.main (docs/reliability.md)"}, f)
      f.write("\n")


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """An flock on the workdir folder itself (process 0 only) for the run's
  lifetime, released when the process ends, however it ends.

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
    The evaluation results (results.json; empty if the mode does not
    evaluate).
  """
  config_checks.check_config(config)
  check_workdir(workdir)
  with workdir_lock(workdir):
    if jax.process_index() == 0:
      _check_writable(workdir)
    mesh = sharding.make_data_mesh(config.num_devices or None)
    sharding.check_global_batch(config.data.p * config.data.k, mesh)
    to_train = phases.to_train(config)
    # Before reading (or building) any data.
    if (phases.STUDENT in to_train and phases.TEACHER not in to_train
        and phases.STUDENT.reads_teacher(config)):
      initialization.require_teacher(config, workdir)
    for phase in to_train:
      loop.check_resumable(config, workdir, phase)
    benchmark = load_benchmark(config, workdir)
    logging.info("Benchmark %s: %d train, %d query, %d gallery images.",
                 benchmark.name, len(benchmark.train), len(benchmark.query),
                 len(benchmark.gallery))
    sources = data_sources(config, workdir, benchmark)
    # The data is built (in WORKDIR/data by default): the workdir is this
    # project's from here on, whatever a later check refuses.
    claim_workdir(workdir)
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
