"""TFDS ArrayRecord builders: round trip without TensorFlow, reuse, pipeline."""

import importlib.util
import os
import sys
import types

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data_pipelines import pipeline
from data_pipelines import tfds_builder
from data_pipelines.records import Benchmark, ImageRecord
from pshrnet_jax import errors

_SIZE = (16, 8)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
  """Lossless PNGs: train and query with LR versions, an HR-only gallery."""
  folder = tmp_path_factory.mktemp("bench")
  rng = np.random.default_rng(1)
  records = []
  for i in range(14):
    hr = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
    hr_path = str(folder / f"{i:04d}_c{i % 2}.png")
    lr_path = str(folder / f"{i:04d}_c{i % 2}_lr.png")
    Image.fromarray(hr).save(hr_path)
    Image.fromarray(lr).save(lr_path)
    records.append(ImageRecord(hr_path, 100 + i % 4, i % 2, lr_path, 2 + i % 3))
  gallery = tuple(r._replace(lr_path=None, lr_factor=1) for r in records[10:])
  return Benchmark("mlr_tiny", tuple(records[:8]), tuple(records[8:10]),
                   gallery)


@pytest.fixture(scope="module")
def prepared(benchmark, tmp_path_factory):
  tfds.disable_progress_bar()
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return data_dir, tfds_builder.prepare_benchmark_source(benchmark, data_dir)


def _pixels(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def test_round_trip_equals_the_images_written(benchmark, prepared):
  _, sources = prepared
  assert set(sources) == {"train", "query", "gallery"}
  for split in ("train", "query", "gallery"):
    records = getattr(benchmark, split)
    assert len(sources[split]) == len(records)
    for i, record in enumerate(records):
      item = sources[split][i]
      np.testing.assert_array_equal(item["hr"], _pixels(record.hr_path))
      if record.lr_path is None:
        assert len(item["lr"]) == 0
      else:
        (lr,) = item["lr"]
        np.testing.assert_array_equal(lr, _pixels(record.lr_path))
      assert (item["pid"], item["camid"], item["lr_factor"], item["index"]) == (
          record.pid, record.camid, record.lr_factor, i)
      assert item["file_name"] == os.path.basename(record.hr_path).encode()


def test_no_tensorflow_needed():
  # Building and reading above ran in this process; TF is not installed and
  # nothing imported it.
  assert importlib.util.find_spec("tensorflow") is None
  assert "tensorflow" not in sys.modules


def test_prepared_once_then_reused(benchmark, prepared, monkeypatch):
  data_dir, _ = prepared
  (config_dir,) = os.listdir(os.path.join(data_dir, "reid_benchmark"))
  key = tfds_builder.benchmark_key(benchmark)
  assert config_dir == f"mlr_tiny_{key}"

  def fail(records):
    raise AssertionError("rebuilt a prepared dataset")

  monkeypatch.setattr(tfds_builder, "_examples", fail)
  again = tfds_builder.prepare_benchmark_source(benchmark, data_dir)
  assert len(again["train"]) == 8
  # Different records: a new dataset next to the old one.
  monkeypatch.undo()
  smaller = Benchmark("mlr_tiny", benchmark.train[:6], benchmark.query, ())
  sources = tfds_builder.prepare_benchmark_source(smaller, data_dir)
  assert set(sources) == {"train", "query"}  # an empty split is not written
  assert len(os.listdir(os.path.join(data_dir, "reid_benchmark"))) == 2
  # Also readable by name, as any TFDS dataset.
  named = tfds.data_source(
      f"reid_benchmark/mlr_tiny_{key}", data_dir=data_dir, split="query",
      builder_kwargs={"file_format": "array_record"}, download=False)
  assert [named[i]["index"] for i in range(2)] == [0, 1]


def test_source_feeds_the_pipelines(benchmark, prepared):
  _, sources = prepared
  from_source = pipeline.make_train_iterator(
      benchmark.train, image_size=_SIZE, p=2, k=2, seed=3,
      source=sources["train"])
  from_files = pipeline.make_train_iterator(
      benchmark.train, image_size=_SIZE, p=2, k=2, seed=3)
  for _ in range(3):
    a, b = next(from_source), next(from_files)
    for key in ("hr", "lr", "label", "pid"):
      np.testing.assert_array_equal(a[key], b[key])
  for split in ("query", "gallery"):
    records = getattr(benchmark, split)
    (a,) = pipeline.make_eval_batches(records, image_size=_SIZE, batch_size=4,
                                      include_hr=True, source=sources[split])
    (b,) = pipeline.make_eval_batches(records, image_size=_SIZE, batch_size=4,
                                      include_hr=True)
    for key in b:
      np.testing.assert_array_equal(a[key], b[key])
  # A source from another split does not line up with the records.
  with pytest.raises(errors.PipelineError, match="not aligned"):
    list(pipeline.make_eval_batches(benchmark.train[1:3], image_size=_SIZE,
                                    batch_size=2, source=sources["query"]))


def test_manual_builder_reads_the_users_folder(benchmark, tmp_path,
                                               monkeypatch):
  """A per-benchmark builder hands the manual dir, seed and trial to
  benchmarks.load_benchmark (replaced here by a stub returning the records)."""
  calls = []

  def load_benchmark(name, root, *, build_dir, seed, split_index, options):
    calls.append((name, root, build_dir, seed, split_index, options))
    return benchmark

  stub = types.ModuleType("data_pipelines.benchmarks")
  stub.load_benchmark = load_benchmark
  monkeypatch.setitem(sys.modules, "data_pipelines.benchmarks", stub)
  import data_pipelines  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(data_pipelines, "benchmarks", stub, raising=False)
  user_root = tmp_path / "VIPeR"
  user_root.mkdir()
  (user_root / "cam_a").mkdir()  # TFDS refuses an empty manual dir
  builder = tfds_builder.MlrViper(
      data_dir=str(tmp_path / "tfds"),
      config=tfds_builder.ReidBuilderConfig.make(
          seed=3, split_index=2, options={"lr_root": "/x"}, name="s3_t2_x"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(user_root)))
  ((name, root, build_dir, seed, split_index, options),) = calls
  assert (name, root, seed, split_index, options) == (
      "mlr_viper", str(user_root), 3, 2, {"lr_root": "/x"})
  assert build_dir.startswith(str(tmp_path / "tfds"))
  assert builder.data_dir.endswith(os.path.join("mlr_viper", "s3_t2_x",
                                                "1.0.0"))
  query = builder.as_data_source(split="query")
  np.testing.assert_array_equal(query[1]["hr"],
                                _pixels(benchmark.query[1].hr_path))
