"""Readers of the published layouts, on miniature copies with real names."""

import os

import h5py
import numpy as np
from PIL import Image
import pytest

import fixtures_data
from data_pipelines.readers import caviar
from data_pipelines.readers import checks
from data_pipelines.readers import cuhk03
from pshrnet_jax import errors
from data_pipelines.readers import market
from data_pipelines.readers import viper


def _names(records):
  return [os.path.basename(r.hr_path) for r in records]


# --- Market-1501 / DukeMTMC-reID -------------------------------------------


def test_market_counts_junk_distractors_and_cameras(tmp_path):
  root = fixtures_data.make_market(str(tmp_path / "Market-1501-v15.09.15"))
  bench = market.read_market_layout(root, "market1501")
  assert bench.name == "market1501" and bench.protocol == "multi_shot"
  # Sorted by name; Thumbs.db ignored.
  assert [(r.pid, r.camid) for r in bench.train] == [
      (2, 0), (2, 1), (7, 2), (7, 5), (7, 5)]
  assert [(r.pid, r.camid) for r in bench.query] == [(1, 0), (3, 1)]
  # Junk (-1) dropped; the distractor (0) kept in the gallery.
  assert _names(bench.gallery) == [
      "0000_c1s1_000151_01.jpg", "0001_c1s1_001101_01.jpg",
      "0001_c2s1_000301_02.jpg", "0003_c5s1_000151_03.jpg"]
  assert [(r.pid, r.camid) for r in bench.gallery] == [
      (0, 0), (1, 0), (1, 1), (3, 4)]
  assert all(r.lr_path is None and r.lr_factor == 1
             for r in bench.train + bench.query + bench.gallery)
  assert bench.query[0].hr_path == os.path.join(
      root, "query", "0001_c1s1_001051_00.jpg")


def test_duke_has_eight_cameras(tmp_path):
  root = fixtures_data.make_market(str(tmp_path), fixtures_data.DUKE_FILES)
  bench = market.read_market_layout(root, "dukemtmc")
  assert [(r.pid, r.camid) for r in bench.train] == [(1, 1), (1, 7), (4, 0)]
  assert [(r.pid, r.camid) for r in bench.gallery] == [(0, 2), (5, 6)]
  # Duke's rule is not Market's: a Market name in a Duke folder is an error.
  fixtures_data.write_image(
      os.path.join(root, "query", "0005_c2s1_000151_00.jpg"), (4, 8), 0)
  with pytest.raises(errors.FileNameError, match="0005_c2s1_000151_00.jpg"):
    market.read_market_layout(root, "dukemtmc")


@pytest.mark.parametrize("bad_name", [
    "0002_c7s1_000451_03.jpg",  # Market has cameras 1-6
    "img_0001.jpg", "0002_c1_f0046182.jpg"])
def test_market_unparsable_name_is_named(tmp_path, bad_name):
  root = fixtures_data.make_market(str(tmp_path))
  fixtures_data.write_image(
      os.path.join(root, "bounding_box_train", bad_name), (4, 8), 0)
  with pytest.raises(errors.FileNameError) as info:
    market.read_market_layout(root)
  assert bad_name in str(info.value)
  assert "bounding_box_train" in str(info.value)


def test_market_distractor_outside_gallery_is_an_error(tmp_path):
  root = fixtures_data.make_market(str(tmp_path))
  fixtures_data.write_image(
      os.path.join(root, "query", "0000_c1s1_000001_00.jpg"), (4, 8), 0)
  with pytest.raises(errors.FileNameError, match="0000_c1s1_000001_00.jpg"):
    market.read_market_layout(root)


def test_missing_root(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    market.read_market_layout(str(tmp_path / "nope"))
  assert isinstance(info.value, FileNotFoundError)
  assert isinstance(info.value, ValueError)
  assert str(tmp_path / "nope") in str(info.value)
  assert "bounding_box_train/" in str(info.value)


def test_parent_folder_gets_a_hint_and_the_tree(tmp_path):
  child = fixtures_data.make_market(str(tmp_path / "Market-1501-v15.09.15"))
  with pytest.raises(errors.DatasetLayoutError) as info:
    market.read_market_layout(str(tmp_path))
  message = str(info.value)
  assert "Found: Market-1501-v15.09.15/" in message
  assert f"Did you mean root={child}" in message
  assert "bounding_box_test/" in message  # the expected tree


def test_empty_split_is_an_error(tmp_path):
  files = dict(fixtures_data.MARKET_FILES, query=[])
  root = fixtures_data.make_market(str(tmp_path), files)
  with pytest.raises(errors.EmptySplitError, match="query"):
    market.read_market_layout(root)


def test_query_without_cross_camera_gallery_match(tmp_path):
  files = dict(fixtures_data.MARKET_FILES)
  files["query"] = files["query"] + ["0009_c4s1_000001_00.jpg"]
  files["bounding_box_test"] = files["bounding_box_test"] + [
      "0009_c4s1_000002_00.jpg"]  # same camera only: not a valid match
  root = fixtures_data.make_market(str(tmp_path), files)
  with pytest.raises(errors.SplitError, match=r"have no gallery image.*: 9$"):
    market.read_market_layout(root)


def test_infer_factor():
  assert market.infer_factor((64, 128), (32, 64)) == 2
  assert market.infer_factor((64, 128), (21, 43)) == 3  # floor / ceil mixed
  assert market.infer_factor((64, 128), (22, 42)) == 3
  assert market.infer_factor((64, 128), (16, 32)) == 4
  assert market.infer_factor((64, 128), (20, 40)) == 0
  assert market.infer_factor((64, 128), (64, 128)) == 0


# --- VIPeR ----------------------------------------------------------------


def test_viper_pairs_and_seeded_split(tmp_path):
  root = fixtures_data.make_viper(str(tmp_path), num=6)
  pairs = viper.read_viper(root)
  assert [(a.pid, b.pid, a.camid, b.camid) for a, b in pairs] == [
      (3 * i, 3 * i, 0, 1) for i in range(6)]
  bench = viper.viper_split(pairs, seed=0, trial=0)
  assert bench.protocol == "single_shot"
  test = {r.pid for r in bench.query}
  order = np.random.default_rng([0, 0]).permutation(6)
  assert test == {3 * int(i) for i in order[3:]}
  assert len(bench.train) == 6 and len({r.pid for r in bench.train}) == 3
  assert {r.pid for r in bench.train}.isdisjoint(test)
  assert {r.camid for r in bench.query} == {1}  # camera B is LR
  assert {r.camid for r in bench.gallery} == {0}
  assert [r.pid for r in bench.query] == [r.pid for r in bench.gallery]
  splits = {frozenset(r.pid for r in viper.viper_split(
      pairs, seed=0, trial=t).query) for t in range(6)}
  assert len(splits) > 1  # trials differ
  assert viper.viper_split(pairs, seed=0, trial=0) == bench
  swapped = viper.viper_split(pairs, lr_camera="cam_a")
  assert {r.camid for r in swapped.query} == {0}


def test_viper_bad_layouts(tmp_path):
  root = fixtures_data.make_viper(str(tmp_path), num=3)
  os.remove(os.path.join(root, "cam_b", "003_90.bmp"))
  with pytest.raises(errors.DatasetLayoutError, match="cam_b/ 2"):
    viper.read_viper(root)
  fixtures_data.write_image(os.path.join(root, "cam_b", "004_90.bmp"),
                            (4, 8), 0)
  with pytest.raises(errors.FileNameError, match="003_45.bmp / 004_90.bmp"):
    viper.read_viper(root)
  with pytest.raises(errors.SplitError, match="77"):
    viper.viper_split(viper.read_viper(fixtures_data.make_viper(
        str(tmp_path / "v2"))), test_ids=[0, 77])


# --- CAVIAR4REID ------------------------------------------------------------


def test_caviar_cameras_split_and_genuine_lr(tmp_path):
  root = fixtures_data.make_caviar(str(tmp_path))
  records = caviar.read_caviar(root)
  assert len(records) == 6 * 6 + 2 * 3
  assert {(r.pid, r.camid) for r in records if r.pid == 1} == {(1, 0), (1, 1)}
  bench = caviar.caviar_split(records, seed=0, trial=0)
  order = np.random.default_rng([0, 0]).permutation(6)
  test = {fixtures_data.CAVIAR_BOTH[i] for i in order[:3]}
  assert {r.pid for r in bench.query} == test
  # 'auto' picks camera 1: its images are smaller.
  assert {r.camid for r in bench.query} == {1}
  assert {r.camid for r in bench.gallery} == {0}
  assert all(r.lr_path == r.hr_path and r.lr_factor == 1 for r in bench.query)
  assert all(r.lr_path is None for r in bench.gallery)
  train_ids = {r.pid for r in bench.train}
  # SPEC 5: the single-camera people do not train by default.
  assert train_ids == set(fixtures_data.CAVIAR_BOTH) - test
  # Training: LR-camera images are their own LR, HR-camera ones wait for
  # the builder.
  assert all((r.lr_path == r.hr_path) == (r.camid == 1) for r in bench.train)
  forced = caviar.caviar_split(records, lr_camera=0)
  assert {r.camid for r in forced.query} == {0}


def test_caviar_bad_input(tmp_path):
  root = fixtures_data.make_caviar(str(tmp_path / "CAVIARa"))
  records = caviar.read_caviar(root)
  with pytest.raises(errors.SplitError, match="7, 8"):
    caviar.caviar_split(records, test_ids=[1, 7, 8])
  with pytest.raises(errors.DatasetLayoutError, match="Did you mean"):
    caviar.read_caviar(str(tmp_path))
  fixtures_data.write_image(os.path.join(root, "0001021.jpg"), (4, 8), 0)
  with pytest.raises(errors.FileNameError, match="0001021.jpg"):
    caviar.read_caviar(root)


# --- CUHK03 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cuhk03_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("cuhk03_release"))
  fixtures_data.make_cuhk03_mat(root)
  build = str(tmp_path_factory.mktemp("build"))
  return root, build, cuhk03.extract_cuhk03(root, build_dir=build)


def test_cuhk03_extraction_matches_the_mat(cuhk03_data):
  root, build, data = cuhk03_data
  # 11 persons x 10 cells, minus the 2 empty cells.
  assert len(data.records) == 108
  assert data.images_root == os.path.join(
      build, f"cuhk03-labeled-images-{checks.root_tag(root)}")
  assert {r.pid for r in data.records} == {
      1001, 1002, 1003, 2001, 2002, 3001, 3002, 4001, 4002, 5001, 5002}
  by_name = {os.path.basename(r.hr_path): r for r in data.records}
  assert "1_002_1_04.png" not in by_name and "1_002_2_09.png" not in by_name
  # Pair 3 (1-based): cameras 4 and 5; cells 1-5 first camera, 6-10 second.
  assert (by_name["3_002_1_05.png"].camid, by_name["3_002_2_06.png"].camid) \
      == (4, 5)
  # Pixels survive the transposes exactly (sizes differ per cell and person).
  for name, (pair, person, cell) in [("1_001_1_01.png", (1, 1, 1)),
                                     ("5_002_2_10.png", (5, 2, 10))]:
    with Image.open(by_name[name].hr_path) as image:
      np.testing.assert_array_equal(
          np.asarray(image),
          fixtures_data.cuhk03_pixels("labeled", pair, person, cell))
  assert data.testsets == ((1001, 2002), (1003, 3001))


def test_cuhk03_split(cuhk03_data):
  _, _, data = cuhk03_data
  bench = cuhk03.cuhk03_split(data, 1)
  assert bench.protocol == "single_shot"
  assert {r.pid for r in bench.query} == {1003, 3001}
  assert {r.camid for r in bench.query} == {1, 5}
  assert {r.camid for r in bench.gallery} == {0, 4}
  assert len(bench.query) == len(bench.gallery) == 10
  assert len(bench.train) == 108 - 20
  assert {r.pid for r in bench.train}.isdisjoint({1003, 3001})
  other = cuhk03.cuhk03_split(data, 0, lr_camera_in_pair=0)
  assert {r.camid for r in other.query} == {0, 2}
  # Person 1002 lost cell 4 (camera 0) and 9 (camera 1): 4 images each side.
  custom = cuhk03.cuhk03_split(data, test_ids=[1002])
  assert (len(custom.query), len(custom.gallery)) == (4, 4)
  with pytest.raises(errors.SplitError, match="out of range"):
    cuhk03.cuhk03_split(data, 2)
  with pytest.raises(errors.SplitError, match="9009"):
    cuhk03.cuhk03_split(data, test_ids=[1001, 9009])


def test_cuhk03_detected_and_reuse(cuhk03_data):
  root, build, data = cuhk03_data
  detected = cuhk03.extract_cuhk03(root, build_dir=build,
                                   image_type="detected")
  assert detected.images_root.endswith(
      f"cuhk03-detected-images-{checks.root_tag(root)}")
  with Image.open(detected.records[0].hr_path) as image:
    np.testing.assert_array_equal(
        np.asarray(image), fixtures_data.cuhk03_pixels("detected", 1, 1, 1))
  # The second call reuses the extraction (the .mat is not needed again).
  index = os.path.join(data.images_root, "index.json")
  mtime = os.path.getmtime(index)
  again = cuhk03.extract_cuhk03(root, build_dir=build)
  assert again == data and os.path.getmtime(index) == mtime


def test_cuhk03_bad_files(tmp_path):
  with pytest.raises(errors.DatasetLayoutError, match="cuhk-03.mat"):
    cuhk03.extract_cuhk03(str(tmp_path), build_dir=str(tmp_path / "b"))
  with open(tmp_path / "cuhk-03.mat", "wb") as f:
    f.write(b"MATLAB 5.0 MAT-file")  # an old-format (non-HDF5) .mat
  with pytest.raises(errors.DatasetLayoutError, match="v7.3"):
    cuhk03.extract_cuhk03(str(tmp_path), build_dir=str(tmp_path / "../b"))
  with h5py.File(tmp_path / "cuhk-03.mat", "w") as f:
    f.create_dataset("labeled", data=np.zeros(2))
  with pytest.raises(errors.DatasetLayoutError, match="testsets"):
    cuhk03.extract_cuhk03(str(tmp_path), build_dir=str(tmp_path / "../b"))
  with pytest.raises(errors.BuildDirError, match="inside the dataset"):
    cuhk03.extract_cuhk03(str(tmp_path), build_dir=str(tmp_path / "build"))
