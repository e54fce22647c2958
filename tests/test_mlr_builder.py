"""The seeded MLR builder and the benchmark registry."""

import hashlib
import json
import math
import os
import sys
import types

from PIL import Image
import pytest

import data_pipelines.builders
import fixtures_data
from data_pipelines import benchmarks
from pshrnet_jax import errors
from data_pipelines.builders import mlr
from data_pipelines.readers import checks


def _tree(folder):
  """relative path -> sha256 of every file under `folder`."""
  out = {}
  for dirpath, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def market_root(tmp_path_factory):
  return fixtures_data.make_market(str(tmp_path_factory.mktemp("market")))


@pytest.fixture(scope="module")
def mlr_market(market_root, tmp_path_factory):
  build_dir = str(tmp_path_factory.mktemp("build"))
  return benchmarks.prepare_benchmark("mlr_market1501", market_root,
                                      build_dir=build_dir, seed=5)


def test_two_builds_are_byte_identical(market_root, mlr_market, tmp_path):
  other = benchmarks.prepare_benchmark("mlr_market1501", market_root,
                                       build_dir=str(tmp_path), seed=5)
  assert os.path.basename(other.path) == (
      f"mlr_market1501-seed5-{checks.root_tag(market_root)}")
  first, second = _tree(mlr_market.path), _tree(other.path)
  assert first == second
  assert "manifest.json" in first and len(first) == 1 + 5 + 2
  different = benchmarks.prepare_benchmark(
      "mlr_market1501", market_root, build_dir=str(tmp_path), seed=6)
  assert different.path != other.path
  assert different.manifest["key"]["seed"] == 6


def test_records_and_manifest(market_root, mlr_market):
  bench, manifest = mlr_market.benchmark, mlr_market.manifest
  assert bench.name == "mlr_market1501" and bench.protocol == "multi_shot"
  assert all(r.lr_path is None for r in bench.gallery)
  assert len(bench.gallery) == 4  # distractor kept, junk dropped
  assert manifest["key"]["dataset"] == "mlr_market1501"
  assert manifest["key"]["builder_version"] == mlr.BUILDER_VERSION
  assert manifest["key"]["options"]["factors"] == [2, 3, 4]
  assert manifest["identities"] == {"train": [2, 7], "query": [1, 3],
                                    "gallery": [0, 1, 3]}
  assert manifest["skipped_unreadable"] == []
  for record in bench.train + bench.query:
    rel = os.path.relpath(record.hr_path, market_root)
    factor = mlr.draw_factor(5, rel)
    assert record.lr_factor == factor
    assert manifest["lr_images"][rel] == {
        "factor": factor, "origin": "built",
        "lr": "lr/" + rel[:-len(".jpg")] + ".png"}
    with open(record.lr_path, "rb") as f:
      data = f.read()
    assert manifest["files"][os.path.relpath(record.lr_path, mlr_market.path)] \
        == hashlib.sha256(data).hexdigest()
    # The LR file is PIL bicubic to ceil(16/r) x ceil(32/r), losslessly kept.
    with Image.open(record.hr_path) as hr, Image.open(record.lr_path) as lr:
      assert lr.format == "PNG"
      assert lr.size == (math.ceil(16 / factor), math.ceil(32 / factor))
      expected = hr.convert("RGB").resize(lr.size, Image.Resampling.BICUBIC)
      assert lr.tobytes() == expected.tobytes()


def test_factor_draw_is_uniform_and_split_independent():
  draws = [mlr.draw_factor(0, f"query/{i:04d}.jpg")
           for i in range(3000)]
  for r in (2, 3, 4):
    assert 900 < draws.count(r) < 1100
  assert draws != [mlr.draw_factor(1, f"query/{i:04d}.jpg")
                   for i in range(3000)]
  assert mlr.lr_size((64, 128), 3) == (22, 43)


def test_reuse_and_conflicts(market_root, tmp_path):
  build = benchmarks.prepare_benchmark("mlr_market1501", market_root,
                                       build_dir=str(tmp_path))
  manifest_path = os.path.join(build.path, "manifest.json")
  mtime = os.path.getmtime(manifest_path)
  again = benchmarks.prepare_benchmark("mlr_market1501", market_root,
                                       build_dir=str(tmp_path))
  assert again.benchmark == build.benchmark
  assert os.path.getmtime(manifest_path) == mtime
  # Non-default options go to their own folder.
  other = benchmarks.prepare_benchmark(
      "mlr_market1501", market_root, build_dir=str(tmp_path),
      options={"lr_query_cameras": [1]})
  assert other.path != build.path
  assert [(r.pid, r.camid) for r in other.benchmark.query] == [(3, 1)]
  # A folder holding a different build is an error, never overwritten.
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest["key"]["seed"] = 99
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)
  before = _tree(build.path)
  with pytest.raises(errors.BuildDirError, match="seed: built 99, requested 0"):
    benchmarks.prepare_benchmark("mlr_market1501", market_root,
                                 build_dir=str(tmp_path))
  assert _tree(build.path) == before
  # No temporary folders are left behind.
  assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_changed_source_is_detected(tmp_path):
  root = fixtures_data.make_market(str(tmp_path / "market"))
  benchmarks.prepare_benchmark("mlr_market1501", root,
                               build_dir=str(tmp_path / "b"))
  fixtures_data.write_image(
      os.path.join(root, "bounding_box_train", "0002_c3s1_000001_01.jpg"),
      (16, 32), 9)
  with pytest.raises(errors.BuildDirError,
                     match="changed.*0002_c3s1_000001_01.jpg"):
    benchmarks.prepare_benchmark("mlr_market1501", root,
                                 build_dir=str(tmp_path / "b"))


def test_build_dir_inside_the_dataset_is_refused(market_root):
  before = _tree(market_root)
  with pytest.raises(errors.BuildDirError, match="inside the dataset"):
    benchmarks.prepare_benchmark("mlr_market1501", market_root,
                                 build_dir=os.path.join(market_root, "built"))
  assert _tree(market_root) == before


def test_unreadable_image_error_or_skip(tmp_path):
  root = fixtures_data.make_market(str(tmp_path / "market"))
  broken = os.path.join(root, "bounding_box_train", "0007_c6s2_000771_01.jpg")
  with open(broken, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 truncated jpeg")
  with pytest.raises(errors.UnreadableImageError,
                     match="0007_c6s2_000771_01.jpg"):
    benchmarks.prepare_benchmark("mlr_market1501", root,
                                 build_dir=str(tmp_path / "b"))
  assert not os.listdir(tmp_path / "b")  # No build, no temporary.
  built = benchmarks.prepare_benchmark(
      "mlr_market1501", root, build_dir=str(tmp_path / "b"),
      options={"skip_unreadable": True})
  assert built.manifest["skipped_unreadable"] == [
      "bounding_box_train/0007_c6s2_000771_01.jpg"]
  assert len(built.benchmark.train) == 4
  assert len(built.manifest["files"]) == 4 + 2


def test_hr_only_market_and_duke(market_root, tmp_path):
  built = benchmarks.prepare_benchmark("market1501", market_root,
                                       build_dir=str(tmp_path))
  assert os.path.basename(built.path) == (
      f"market1501-{checks.root_tag(market_root)}")
  assert built.manifest["files"] == {}
  assert all(r.lr_path is None for r in built.benchmark.query)
  duke = fixtures_data.make_market(str(tmp_path / "duke"),
                                   fixtures_data.DUKE_FILES)
  bench = benchmarks.load_benchmark("mlr_dukemtmc", duke,
                                    build_dir=str(tmp_path))
  assert bench.name == "mlr_dukemtmc"
  assert {r.camid for r in bench.train} == {0, 1, 7}
  assert all(r.lr_factor in (2, 3, 4) for r in bench.train + bench.query)


def test_prebuilt_lr_folder(market_root, tmp_path):
  lr_root = str(tmp_path / "MLR-Market")
  names = fixtures_data.MARKET_FILES["query"]
  # One query at exactly half size, the other at a size no factor explains.
  for name, size in zip(names, [(8, 16), (5, 9)]):
    fixtures_data.write_image(os.path.join(lr_root, "query", name), size, 0)
  built = benchmarks.prepare_benchmark(
      "mlr_market1501", market_root, build_dir=str(tmp_path / "b"),
      options={"lr_root": lr_root})
  query = built.benchmark.query
  assert [(os.path.basename(r.lr_path), r.lr_factor) for r in query] == [
      (names[0], 2), (names[1], 0)]
  assert all(os.path.dirname(r.lr_path) == os.path.join(lr_root, "query")
             for r in query)
  # No training LR in the folder: built ones, seeded as usual.
  assert all(r.lr_path.startswith(built.path) for r in built.benchmark.train)
  assert len(built.manifest["files"]) == 5
  with pytest.raises(errors.BuildDirError, match="inside the dataset"):
    benchmarks.prepare_benchmark(
        "mlr_market1501", market_root, build_dir=os.path.join(lr_root, "x"),
        options={"lr_root": lr_root})
  fixtures_data.write_image(
      os.path.join(lr_root, "query", "0004_c1s1_000001_00.jpg"), (8, 16), 0)
  os.remove(os.path.join(lr_root, "query", names[1]))
  with pytest.raises(errors.LRPairingError) as info:
    benchmarks.prepare_benchmark(
        "mlr_market1501", market_root, build_dir=str(tmp_path / "c"),
        options={"lr_root": lr_root})
  assert names[1] in str(info.value)
  assert "0004_c1s1_000001_00.jpg" in str(info.value)


def test_viper_factors_do_not_depend_on_the_split(tmp_path):
  root = fixtures_data.make_viper(str(tmp_path / "VIPeR"), num=8)
  splits = [benchmarks.load_benchmark("mlr_viper", root,
                                      build_dir=str(tmp_path / "b"),
                                      split_index=i) for i in range(2)]
  factors = [{r.hr_path: r.lr_factor for r in s.train + s.query}
             for s in splits]
  shared = set(factors[0]) & set(factors[1])
  assert shared and all(factors[0][p] == factors[1][p] for p in shared)
  assert all(r.camid == 1 and r.lr_factor in (2, 3, 4)
             for r in splits[0].query)
  assert len(splits[0].train) == 8 and len(splits[0].query) == 4


def test_caviar_and_cuhk03_through_the_registry(tmp_path):
  root = fixtures_data.make_caviar(str(tmp_path / "caviar"))
  built = benchmarks.prepare_benchmark("caviar", root,
                                       build_dir=str(tmp_path / "b"))
  bench = built.benchmark
  assert all(r.lr_factor == 1 and r.lr_path == r.hr_path for r in bench.query)
  assert all(r.lr_factor in (2, 3, 4) and r.lr_path.startswith(built.path)
             for r in bench.train if r.camid == 0)
  assert all(r.lr_path == r.hr_path for r in bench.train if r.camid == 1)
  assert built.manifest["lr_images"][os.path.basename(bench.query[0].hr_path)
                                     ]["origin"] == "given"
  mat_root = str(tmp_path / "cuhk03")
  fixtures_data.make_cuhk03_mat(mat_root)
  cuhk = benchmarks.load_benchmark("mlr_cuhk03", mat_root,
                                   build_dir=str(tmp_path / "b"),
                                   split_index=0)
  assert {r.pid for r in cuhk.query} == {1001, 2002}
  assert all(r.lr_factor in (2, 3, 4) for r in cuhk.query + cuhk.train)
  with pytest.raises(errors.BuildDirError, match="inside the dataset"):
    benchmarks.load_benchmark("mlr_cuhk03", mat_root,
                              build_dir=os.path.join(mat_root, "b"))


def test_demo_uses_the_generator_lazily(tmp_path, monkeypatch):
  calls = []

  def generate_demo(out_dir, seed):
    calls.append((out_dir, seed))
    return fixtures_data.make_market(os.path.join(out_dir, "market"))

  fake = types.ModuleType("data_pipelines.builders.synthetic")
  fake.generate_demo = generate_demo
  monkeypatch.setitem(sys.modules, "data_pipelines.builders.synthetic", fake)
  monkeypatch.setattr(data_pipelines.builders, "synthetic", fake,
                      raising=False)
  bench = benchmarks.load_benchmark("demo", None, build_dir=str(tmp_path),
                                    seed=3)
  assert calls == [(str(tmp_path / "demo-source-seed3"), 3)]
  assert bench.name == "demo" and bench.protocol == "multi_shot"
  assert len(bench.query) == 2 and all(r.lr_factor in (2, 3, 4)
                                       for r in bench.query)


def test_registry_rejects_bad_arguments(market_root, tmp_path):
  with pytest.raises(errors.ConfigError, match="'market': unknown benchmark"):
    benchmarks.load_benchmark("market", market_root, build_dir=str(tmp_path))
  with pytest.raises(errors.ConfigError,
                     match=r"has \['lr_camera'\], which mlr_market1501 does "
                     r"not take"):
    benchmarks.load_benchmark("mlr_market1501", market_root,
                              build_dir=str(tmp_path),
                              options={"lr_camera": "cam_b"})
  with pytest.raises(ValueError, match="single split"):
    benchmarks.load_benchmark("market1501", market_root,
                              build_dir=str(tmp_path), split_index=1)
  with pytest.raises(errors.DatasetNotFoundError, match="No dataset root"):
    benchmarks.load_benchmark("mlr_viper", None, build_dir=str(tmp_path))
