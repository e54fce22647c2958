"""Your own data: the folder reader, its seeded split, and camera-less rules.

Fixtures are tiny folder trees (tests/fixtures_data.py): one without
cameras (ROOT/<identity>/<image>) and one with (ROOT/<camera>/<identity>/
<image>).
"""

import json
import os

import numpy as np
import pytest

import fixtures_data
from data_pipelines import benchmarks
from data_pipelines import records
from data_pipelines import summary
from data_pipelines.readers import folder
from pshrnet_jax import errors
from pshrnet_jax.evaluation import metrics


def _rel(root, record):
  return os.path.relpath(record.hr_path, root)


def test_identity_layout_without_cameras(tmp_path):
  root = fixtures_data.make_folder(str(tmp_path / "mine"))
  data = folder.read_folder(root)
  assert not data.has_cameras and data.cameras == ()
  # Sorted names -> pids 1..8; notes.txt and .DS_Store are not images.
  assert data.identities == ("alice", "bob", "carol", "dave", "erin",
                             "frank", "gus", "solo")
  assert len(data.records) == sum(fixtures_data.FOLDER_IDS.values()) == 28
  assert {r.camid for r in data.records} == {0}
  for record in data.records:
    identity = _rel(root, record).split(os.sep)[0]
    assert record.pid == data.identities.index(identity) + 1


def test_camera_layout_matches_identities_across_cameras(tmp_path):
  root = fixtures_data.make_folder(str(tmp_path / "mine"), cameras=True)
  data = folder.read_folder(root)
  assert data.cameras == ("cam1", "cam2")
  assert data.identities == ("ann", "ben", "cat", "dan", "eve", "fay")
  seen = {}
  for record in data.records:
    camera, identity, _ = _rel(root, record).split(os.sep)
    assert record.camid == ("cam1", "cam2").index(camera)
    assert record.pid == data.identities.index(identity) + 1
    seen.setdefault(identity, set()).add(record.camid)
  assert seen["ann"] == {0, 1} and seen["eve"] == {0}


def _check_split(data, benchmark):
  train = {r.pid for r in benchmark.train}
  test = {r.pid for r in benchmark.query} | {r.pid for r in benchmark.gallery}
  assert not train & test  # disjoint by identity
  query_paths = {r.hr_path for r in benchmark.query}
  assert not query_paths & {r.hr_path for r in benchmark.gallery}
  assert sorted(r.hr_path for r in benchmark.train + benchmark.query +
                benchmark.gallery) == [r.hr_path for r in data.records]


def test_split_without_cameras_is_seeded_disjoint_and_counted(tmp_path):
  data = folder.read_folder(fixtures_data.make_folder(str(tmp_path / "m")))
  benchmark = folder.folder_split(data, seed=0, query_fraction=0.5)
  _check_split(data, benchmark)
  assert benchmark.gallery_exclusion == records.QUERY_IMAGE_ONLY
  assert benchmark.protocol == "multi_shot"
  assert len({r.pid for r in benchmark.train}) == 4  # round(0.5 * 8)
  # Queries per test identity: round-half-up(0.5 n), kept in [1, n - 1].
  expected = {5: 3, 4: 2, 3: 2, 2: 1, 6: 3, 1: 0}
  for pid in {r.pid for r in benchmark.gallery}:
    n = fixtures_data.FOLDER_IDS[data.identities[pid - 1]]
    assert sum(r.pid == pid for r in benchmark.query) == expected[n], n
  assert folder.folder_split(data, seed=0, query_fraction=0.5) == benchmark
  other = folder.folder_split(data, seed=1, query_fraction=0.5)
  _check_split(data, other)
  assert other != benchmark


def test_split_with_cameras_keeps_a_cross_camera_match(tmp_path):
  root = fixtures_data.make_folder(str(tmp_path / "m"), cameras=True)
  data = folder.read_folder(root)
  for seed in range(4):
    benchmark = folder.folder_split(data, seed=seed, query_fraction=0.5)
    _check_split(data, benchmark)
    assert benchmark.gallery_exclusion == records.SAME_IDENTITY_SAME_CAMERA
    assert benchmark.query
    for q in benchmark.query:
      assert any(g.pid == q.pid and g.camid != q.camid
                 for g in benchmark.gallery)
    eve = data.identities.index("eve") + 1  # one camera: never a query
    assert all(r.pid != eve for r in benchmark.query)


def _tree(root, paths):
  for path in paths:
    fixtures_data.write_image(os.path.join(root, path), (8, 8), 0)
  return root


@pytest.mark.parametrize("paths, message", [
    (["a.jpg", "bob/1.jpg"], r"images directly in it \(a.jpg\)"),
    (["alice/1.jpg", "cam1/bob/1.jpg"],
     r"alice holds images .* but .*cam1 holds folders"),
    (["alice/1.jpg", "alice/sub/2.jpg"], r"alice holds both images and folders"),
    (["cam1/ann/sub/1.jpg"], r"cam1/ann/sub is a folder inside an identity"),
    (["cam1/ann/1.jpg", "cam1/ben/notes.txt"], r"cam1/ben holds no images"),
    (["alice/1.jpg", "bob/notes.txt"], r"bob holds no images or folders"),
])
def test_neither_layout_is_an_error_naming_the_path(tmp_path, paths, message):
  root = str(tmp_path / "bad")
  for path in paths:
    if path.endswith(".txt"):
      os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
      with open(os.path.join(root, path), "w") as f:
        f.write("x")
    else:
      _tree(root, [path])
  with pytest.raises(errors.DatasetLayoutError, match=message) as info:
    folder.read_folder(root)
  assert "ROOT" not in str(info.value) and "<root>/" in str(info.value)


def test_bad_split_options_and_too_little_data(tmp_path):
  data = folder.read_folder(fixtures_data.make_folder(str(tmp_path / "m")))
  with pytest.raises(errors.SplitError, match=r"train_fraction=1.0 must lie"):
    folder.folder_split(data, train_fraction=1.0)
  with pytest.raises(errors.SplitError, match=r"query_fraction=0 must lie"):
    folder.folder_split(data, query_fraction=0)
  one = folder.read_folder(_tree(str(tmp_path / "one"), ["a/1.jpg"]))
  with pytest.raises(errors.SplitError, match="1 identity found"):
    folder.folder_split(one)
  singles = folder.read_folder(_tree(str(tmp_path / "s"),
                                     ["a/1.jpg", "b/1.jpg", "c/1.jpg"]))
  with pytest.raises(errors.SplitError, match="no test identity can have"):
    folder.folder_split(singles)
  with pytest.raises(errors.DatasetNotFoundError, match="does not exist"):
    folder.read_folder(str(tmp_path / "none"))


def test_registry_builds_lr_and_the_summary_reads_it(tmp_path, capsys):
  root = fixtures_data.make_folder(str(tmp_path / "mine"))
  text = summary.run("folder", root, build_dir=str(tmp_path / "b"),
                     options=["query_fraction=0.5"], as_json=True)
  out = json.loads(text)
  assert out["dataset"] == "folder"
  assert out["gallery_exclusion"] == records.QUERY_IMAGE_ONLY
  with open(os.path.join(out["build"], "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["key"]["options"]["train_fraction"] == 0.5
  assert manifest["key"]["options"]["query_fraction"] == 0.5
  assert manifest["key"]["lr_splits"] == ["query", "train"]
  ids = manifest["identities"]
  assert not set(ids["train"]) & set(ids["gallery"])
  splits = out["splits"]
  sizes = {pid: fixtures_data.FOLDER_IDS[name] for pid, name
           in enumerate(sorted(fixtures_data.FOLDER_IDS), 1)}
  train_images = sum(sizes[pid] for pid in ids["train"])
  queries = {5: 3, 4: 2, 3: 2, 2: 1, 6: 3, 1: 0}  # as in the split test
  query_images = sum(queries[sizes[pid]] for pid in ids["gallery"])
  assert splits["train"]["images"] == train_images
  assert splits["query"]["images"] == query_images > 0
  # Every training and query image got a built LR version, none else.
  assert sum(splits["train"]["lr_factors"].values()) == train_images
  assert sum(splits["query"]["lr_factors"].values()) == query_images
  assert "lr_factors" not in splits["gallery"]
  assert splits["query"]["camera_ids"] == [0]
  table = summary.run("folder", root, build_dir=str(tmp_path / "b"),
                      options=["query_fraction=0.5"])
  assert "no camera ids: the evaluation removes only the query image" in table
  built = benchmarks.load_benchmark("folder", root,
                                    build_dir=str(tmp_path / "b"),
                                    options={"query_fraction": 0.5})
  assert all(r.lr_path for r in built.query + built.train)


def test_without_cameras_only_the_query_image_is_excluded():
  # Query a1 (identity 1). Gallery: a1 itself, a2 (identity 1), b1
  # (identity 2), all with camera 0 as the folder reader gives them.
  q_pids, g_pids = np.array([1]), np.array([1, 1, 2])
  distances = np.array([[0.0, 0.5, 0.3]])
  zeros = (np.zeros(1, int), np.zeros(3, int))
  # torchreid's rule with one camera removes a1 and a2: no match left.
  with pytest.raises(errors.RankInputError, match="all 1 queries"):
    metrics.evaluate(distances, q_pids, g_pids, *zeros)
  q_cams, g_cams = metrics.image_camids(["a1.jpg"],
                                        ["a1.jpg", "a2.jpg", "b1.jpg"])
  np.testing.assert_array_equal(q_cams, [0])
  np.testing.assert_array_equal(g_cams, [0, 1, 2])
  result = metrics.evaluate(distances, q_pids, g_pids, q_cams, g_cams)
  # Kept: b1 (0.3), a2 (0.5): the match is second; AP = 1/2. (CMC has the
  # gallery's length, 3.)
  np.testing.assert_array_equal(result.cmc, [0.0, 1.0, 1.0])
  assert result.mAP == 0.5 and result.num_valid_queries == 1


def test_config_file_options_are_the_folder_options():
  from configs import folder as folder_config  # pylint: disable=g-import-not-at-top
  config = folder_config.get_config()
  assert config.data.name == "folder"
  options = config.data.options.to_dict()
  assert benchmarks.resolve_options("folder", options) == (
      benchmarks.DEFAULT_OPTIONS["folder"])
