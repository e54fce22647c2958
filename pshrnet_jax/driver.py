"""The run behind `python -m pshrnet_jax.main`: data, phase 1, phase 2, eval.

    from pshrnet_jax import driver
    results = driver.run(config, workdir)

`run` reads (and on first use builds) the configured benchmark, trains the
phases the mode asks for, evaluates, and returns the evaluation results.
Everything it writes goes under the workdir (`workdir_layout`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from data_pipelines import benchmarks as benchmark_registry
from data_pipelines.records import Benchmark
from pshrnet_jax import workdir_layout
from pshrnet_jax.errors import ConfigError
from pshrnet_jax.evaluation import workdir_eval
from pshrnet_jax.training import loop
from pshrnet_jax.training import sharding

MODES = ("phase1", "phase2", "eval", "all")
DATA_SOURCES = ("tfds", "files")


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
  if config.data.source not in DATA_SOURCES:
    raise ConfigError(f"--config.data.source={config.data.source!r}; "
                      f"expected one of {DATA_SOURCES}.")
  if config.data.source == "files":
    return {}
  # Imported here: tensorflow-datasets takes seconds to import.
  from data_pipelines import tfds_builder  # pylint: disable=g-import-not-at-top
  return tfds_builder.prepare_benchmark_source(
      benchmark,
      os.path.join(workdir_layout.data_build_dir(config, workdir), "tfds"))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config beside the run's outputs."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, workdir_layout.CONFIG_FILE), "w") as f:
    json.dump(config.to_dict(), f, indent=2, default=str)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the configured mode: phase 1, phase 2, evaluation, or all in order.

  Args:
    config: a config from `configs/` (with overrides).
    workdir: where everything is written; a second run resumes from it.

  Returns:
    The evaluation results (the content of results.json; empty if the mode
    does not evaluate).
  """
  if config.mode not in MODES:
    raise ConfigError(
        f"--config.mode={config.mode!r}; expected one of {MODES}.")
  workdir_eval.check_config(config)
  save_config(config, workdir)
  mesh = sharding.make_data_mesh(config.num_devices or None)
  benchmark = load_benchmark(config, workdir)
  logging.info("Benchmark %s: %d train, %d query, %d gallery images.",
               benchmark.name, len(benchmark.train), len(benchmark.query),
               len(benchmark.gallery))
  sources = data_sources(config, workdir, benchmark)
  if config.mode in ("phase1", "all"):
    loop.train_phase(config, workdir, "phase1", benchmark, sources, mesh)
  if config.mode in ("phase2", "all") and not config.hr_only:
    loop.train_phase(config, workdir, "phase2", benchmark, sources, mesh)
  if config.mode in ("eval", "all"):
    return workdir_eval.evaluate_workdir(config, workdir, benchmark, sources)
  return {}
