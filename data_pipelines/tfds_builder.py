"""tensorflow-datasets builders writing re-ID benchmarks as ArrayRecord files.

No TensorFlow is needed to write or read: the builders live in a package,
yield images as file paths (TFDS stores the encoded bytes as they are) and
are read back with `as_data_source()`, a random-access source that grain and
the pipelines consume (features: `_features`; 'lr' is a list of 0 or 1
images, as a fixed feature set needs a way to say "absent"). Examples are
written in record order (`disable_shuffling`), so item i of a split is record
i ('index' is checked when read). A split with no records is not written
(TFDS cannot write an empty split).

`ReidBenchmark` / `prepare_benchmark_source` write any `records.Benchmark`;
`MlrMarket1501` ... `Dukemtmc` are manual-download builders: the user's copy
of the published layout is the manual dir, read by
`benchmarks.load_benchmark` with `config=ReidBuilderConfig.make(seed,
split_index)`.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import re
from typing import Any, Optional

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import records as records_lib
from data_pipelines.pipeline import image_cache

SPLITS = ("train", "query", "gallery")

_MANUAL_INSTRUCTIONS = """\
The benchmark cannot be downloaded by the program (licences, dead links).
Put your copy of the published layout in a folder and pass it as the manual
dir: `builder.download_and_prepare(download_config=
tfds.download.DownloadConfig(manual_dir=ROOT))`. README.md shows the folder
tree each benchmark expects.
"""


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "hr": tfds.features.Image(shape=(None, None, 3)),
      "lr": tfds.features.Sequence(tfds.features.Image(shape=(None, None, 3))),
      "pid": tfds.features.Scalar(np.int64),
      "camid": tfds.features.Scalar(np.int64),
      "lr_factor": tfds.features.Scalar(np.int64),
      "index": tfds.features.Scalar(np.int64),
      "file_name": tfds.features.Text(),
  })


def _examples(records: tuple[records_lib.ImageRecord, ...]):
  for index, record in enumerate(records):
    for path in (record.hr_path, record.lr_path):
      if path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    yield index, {
        "hr": record.hr_path,
        "lr": [] if record.lr_path is None else [record.lr_path],
        "pid": record.pid,
        "camid": record.camid,
        "lr_factor": record.lr_factor,
        "index": index,
        "file_name": os.path.basename(record.hr_path),
    }


class _BenchmarkBuilderBase(tfds.core.GeneratorBasedBuilder,
                            skip_registration=True):
  """Shared features and generation; subclasses say where the records come from."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "HR/LR pairs, ids, cameras, LR factors."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_features(), disable_shuffling=True,
        description="Cross-resolution re-ID benchmark (pshrnet_jax).")

  @abc.abstractmethod
  def _benchmark(self, dl_manager) -> records_lib.Benchmark:
    """The records to write (each subclass says where they come from)."""

  def _split_generators(self, dl_manager):
    benchmark = self._benchmark(dl_manager)
    # TFDS cannot write an empty split: leave it out.
    return {split: self._generate_examples(tuple(getattr(benchmark, split)))
            for split in SPLITS if getattr(benchmark, split)}

  def _generate_examples(self, records):  # pytype: disable=signature-mismatch
    return _examples(records)


def benchmark_key(benchmark: records_lib.Benchmark) -> str:
  """20 hex digits hashing the records and their image files' sizes."""
  parts: list[Any] = [benchmark.name, benchmark.protocol]
  for split in SPLITS:
    for record in getattr(benchmark, split):
      sizes = tuple(os.path.getsize(p) if os.path.isfile(p) else -1
                    for p in (record.hr_path, record.lr_path) if p is not None)
      parts.append((split, tuple(record), sizes))
  return image_cache.cache_key(parts)


class ReidBenchmark(_BenchmarkBuilderBase):
  """Writes a given `records.Benchmark` (no manual dir needed)."""

  name = "reid_benchmark"

  def __init__(self, *, benchmark: Optional[records_lib.Benchmark] = None,
               config: Any = None, **kwargs):
    """Builder for `benchmark`, or for reading an existing config.

    Args:
      benchmark: the records to write; reading a prepared dataset works
        without it given the `config` name.
      config: a config name or BuilderConfig; default: the benchmark's name
        and `benchmark_key(benchmark)`, so changed records build anew.
      **kwargs: `data_dir` and other `GeneratorBasedBuilder` arguments.
    """
    if config is None:
      if benchmark is None:
        raise ValueError("ReidBenchmark needs a benchmark or a config name")
      name = re.sub(r"[^A-Za-z0-9_]+", "_", benchmark.name).strip("_")
      config = f"{name or 'benchmark'}_{benchmark_key(benchmark)}"
    if isinstance(config, str):
      config = tfds.core.BuilderConfig(name=config)
    self._records = benchmark
    super().__init__(config=config, **kwargs)

  def _benchmark(self, dl_manager) -> records_lib.Benchmark:
    if self._records is None:
      raise ValueError(
          f"{self.data_dir} is not prepared and ReidBenchmark got no benchmark "
          "to build it from")
    return self._records


def prepare_benchmark_source(
    benchmark: records_lib.Benchmark, data_dir: str) -> dict[str, Any]:
  """The benchmark as TFDS ArrayRecord data sources, built on first use.

  Args:
    benchmark: the records (e.g. from `benchmarks.load_benchmark`).
    data_dir: TFDS data dir; the dataset goes to
      `data_dir/reid_benchmark/<name>_<hash>/1.0.0/` and is reused when the
      same records come again.

  Returns:
    {'train'|'query'|'gallery': random-access source}, item i of a split being
    record i of that split (a split without records is absent).
  """
  builder = ReidBenchmark(benchmark=benchmark, data_dir=data_dir)
  builder.download_and_prepare()
  return builder.as_data_source()


@dataclasses.dataclass(eq=False)
class ReidBuilderConfig(tfds.core.BuilderConfig):
  """Seed (MLR factors, random splits), trial and options of a build.

  Attributes:
    seed: `load_benchmark`'s seed.
    split_index: the CUHK03 test set / VIPeR or CAVIAR trial.
    options: `load_benchmark`'s per-benchmark options (e.g. lr_root); name
      the config so that different options get different names.
  """

  seed: int = 0
  split_index: int = 0
  options: Optional[dict[str, Any]] = None

  @classmethod
  def make(cls, seed: int = 0, split_index: int = 0,
           options: Optional[dict[str, Any]] = None,
           name: Optional[str] = None) -> ReidBuilderConfig:
    """A config named `seed{seed}_split{split_index}`, or `name` (needed
    with options)."""
    if options and not name:
      raise ValueError("name the config when passing options, so builds "
                       "with different options do not share a folder")
    return cls(name=name or f"seed{seed}_split{split_index}", seed=seed,
               split_index=split_index, options=options)


class _PublishedBenchmarkBuilder(_BenchmarkBuilderBase, skip_registration=True):
  """A benchmark read from the user's copy (the manual dir); the builder's
  name (from the class name) is its `benchmarks.load_benchmark` name."""

  BUILDER_CONFIGS = [ReidBuilderConfig.make(0, 0)]

  def _benchmark(self, dl_manager) -> records_lib.Benchmark:
    # Imported here: the readers are only needed when building.
    from data_pipelines import benchmarks  # pylint: disable=g-import-not-at-top
    config = self.builder_config
    build_dir = os.path.join(os.fspath(dl_manager.download_dir), "mlr_build")
    return benchmarks.load_benchmark(
        self.name, os.fspath(dl_manager.manual_dir),
        build_dir=build_dir, seed=config.seed, split_index=config.split_index,
        options=config.options)


class MlrMarket1501(_PublishedBenchmarkBuilder):
  """MLR-Market-1501 (SPEC 5)."""


class MlrDukemtmc(_PublishedBenchmarkBuilder):
  """MLR-DukeMTMC-reID (SPEC 5)."""


class MlrCuhk03(_PublishedBenchmarkBuilder):
  """MLR-CUHK03 (SPEC 5): choose the test set with the config's split_index."""


class MlrViper(_PublishedBenchmarkBuilder):
  """MLR-VIPeR (SPEC 5): choose the trial with the config's split_index."""


class Caviar(_PublishedBenchmarkBuilder):
  """CAVIAR4REID (SPEC 5): choose the trial with the config's split_index."""


class Market1501(_PublishedBenchmarkBuilder):
  """HR Market-1501 (paper Table VI)."""


class Dukemtmc(_PublishedBenchmarkBuilder):
  """HR DukeMTMC-reID (paper Table VI)."""
