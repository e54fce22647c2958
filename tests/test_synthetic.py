"""Tests for the synthetic demo set: layout, determinism and difficulty."""

import collections
import hashlib
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from data_pipelines.builders import synthetic
from pshrnet_jax import errors

# Market-1501 rules: 4-digit pid, 1-based one-digit camera, sequence, 6-digit
# frame, 2-digit box index.
_MARKET_NAME = re.compile(r"^(\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
_SMALL = dict(num_train_ids=5, num_test_ids=4, num_cameras=2,
              images_per_camera=2, image_size=(64, 32))


def _parse(root):
  """{split: [(pid, camera, name)]} for a Market-1501 style root."""
  out = {}
  for split in ("bounding_box_train", "query", "bounding_box_test"):
    rows = []
    for name in sorted(os.listdir(os.path.join(root, split))):
      match = _MARKET_NAME.match(name)
      assert match is not None, f"{split}/{name} breaks the Market-1501 rules"
      rows.append((int(match[1]), int(match[2]), name))
    out[split] = rows
  return out


def _hashes(root):
  hashes = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        hashes[os.path.relpath(path, root)] = hashlib.sha256(
            f.read()).hexdigest()
  return hashes


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
  """The default demo set (what configs/demo.py trains on), made once."""
  return synthetic.generate_demo(str(tmp_path_factory.mktemp("demo") / "set"))


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
  first = _hashes(synthetic.generate_demo(str(tmp_path / "a"), 3, **_SMALL))
  again = _hashes(synthetic.generate_demo(str(tmp_path / "b"), 3, **_SMALL))
  other = _hashes(synthetic.generate_demo(str(tmp_path / "c"), 4, **_SMALL))
  assert len(first) == 5 * 2 * 2 + 4 * 2 * 2 + 1  # Images + manifest.
  assert first == again
  images = [k for k in first if k.endswith(".jpg")]
  changed = [k for k in images if other.get(k) != first[k]]
  # Different seed: different train/test split, and every image re-drawn.
  assert len(changed) == len(images)


def test_layout_counts_and_names_follow_the_arguments(tmp_path):
  root = synthetic.generate_demo(
      str(tmp_path / "set"), 1, num_train_ids=7, num_test_ids=5,
      num_cameras=4, images_per_camera=3, image_size=(48, 24))
  parsed = _parse(root)
  assert sorted(os.listdir(root)) == sorted(
      ["bounding_box_train", "query", "bounding_box_test",
       synthetic.MANIFEST_NAME])
  train_pids = {p for p, _, _ in parsed["bounding_box_train"]}
  test_pids = {p for p, _, _ in parsed["query"] + parsed["bounding_box_test"]}
  assert len(train_pids) == 7 and len(test_pids) == 5
  assert not train_pids & test_pids
  assert train_pids | test_pids == set(range(1, 13))  # pids start at 1.
  per_pid_cam = collections.Counter(
      (p, c) for split in parsed.values() for p, c, _ in split)
  assert set(per_pid_cam.values()) == {3}  # images_per_camera, every camera.
  assert {c for _, c in per_pid_cam} == {1, 2, 3, 4}
  # One query per test identity and camera; the rest are gallery.
  assert collections.Counter((p, c) for p, c, _ in parsed["query"]) == {
      (p, c): 1 for p in test_pids for c in range(1, 5)}
  assert len(parsed["bounding_box_test"]) == 5 * 4 * 2
  assert len(parsed["bounding_box_train"]) == 7 * 4 * 3
  names = [n for split in parsed.values() for _, _, n in split]
  assert len(set(names)) == len(names)
  with Image.open(os.path.join(root, "query", parsed["query"][0][2])) as img:
    assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (24, 48))
  with open(os.path.join(root, synthetic.MANIFEST_NAME)) as f:
    manifest = json.load(f)
  assert manifest["arguments"] == {
      "seed": 1, "num_train_ids": 7, "num_test_ids": 5, "num_cameras": 4,
      "images_per_camera": 3, "image_size": [48, 24]}
  assert manifest["counts"] == {"bounding_box_train": 84, "query": 20,
                                "bounding_box_test": 40}


def test_default_set_every_query_has_a_cross_camera_gallery_match(demo_root):
  parsed = _parse(demo_root)
  assert (len(parsed["bounding_box_train"]), len(parsed["query"]),
          len(parsed["bounding_box_test"])) == (120 * 12, 40 * 3, 40 * 3 * 3)
  gallery = collections.defaultdict(set)
  for pid, cam, _ in parsed["bounding_box_test"]:
    gallery[pid].add(cam)
  for pid, cam, name in parsed["query"]:
    assert gallery[pid] - {cam}, f"query {name} has no cross-camera match"
  assert not ({p for p, _, _ in parsed["bounding_box_train"]} & set(gallery))


def _histogram(img, grey_world):
  """64-bin RGB histogram of the image, or of its grey-world centre crop."""
  pixels = np.asarray(img, np.float32)
  if grey_world:
    height, width, _ = pixels.shape
    pixels = pixels[height // 10:height * 9 // 10, width * 3 // 10:
                    width * 7 // 10]
    pixels = pixels / (pixels.reshape(-1, 3).mean(0) + 1e-3) * 128
  levels = np.clip(pixels // 64, 0, 3).astype(int)
  counts = np.bincount((levels @ [16, 4, 1]).ravel(), minlength=64)
  return counts / counts.sum()


def _match(root, grey_world):
  """(rank-1, share of nearest other-identity neighbours from query's camera)."""
  feats = {}
  for split in ("query", "bounding_box_test"):
    rows = _parse(root)[split]
    hists = []
    for _, _, name in rows:
      with Image.open(os.path.join(root, split, name)) as img:
        hists.append(_histogram(img, grey_world))
    feats[split] = (np.array(hists), np.array([p for p, _, _ in rows]),
                    np.array([c for _, c, _ in rows]))
  (q, q_pid, q_cam), (g, g_pid, g_cam) = feats["query"], feats[
      "bounding_box_test"]
  dist = np.abs(q[:, None] - g[None]).sum(-1)
  # Market protocol: gallery images of the same id and camera are ignored.
  junk = (q_pid[:, None] == g_pid[None]) & (q_cam[:, None] == g_cam[None])
  nearest = np.where(junk, np.inf, dist).argmin(1)
  rank1 = float(np.mean(g_pid[nearest] == q_pid))
  other_id = np.where(q_pid[:, None] == g_pid[None], np.inf, dist).argmin(1)
  same_camera = float(np.mean(g_cam[other_id] == q_cam))
  return rank1, same_camera


def test_identity_is_visible_but_camera_dominates_raw_colour(demo_root):
  # Chance rank-1 is 6 true matches among ~357 gallery images: about 1.7%.
  rank1_raw, same_cam_raw = _match(demo_root, grey_world=False)
  rank1_gw, same_cam_gw = _match(demo_root, grey_world=True)
  print(f"whole-image histogram: rank-1 {rank1_raw:.3f}, nearest other "
        f"identity from the query's camera {same_cam_raw:.3f}; grey-world "
        f"centre histogram: rank-1 {rank1_gw:.3f}, {same_cam_gw:.3f}")
  # Camera matters: on raw colours (what an untrained network pools) the
  # nearest image of another person comes from the query's own camera almost
  # always (chance: 1/3), and rank-1 is at chance level. Measured at seed 0:
  # 0.0 and 1.0 (generator version 2; version 1: 0.0 and 0.992, and seeds
  # 0-9 gave rank-1 <= 0.042, same camera >= 0.917).
  assert rank1_raw <= 0.05
  assert same_cam_raw >= 0.85
  # Identity is visible: undoing the colour cast (grey world) and looking at
  # the person (centre crop) lifts rank-1 far above chance, yet the shared
  # palette, views, backgrounds and clutter keep it far from solved.
  # Measured 0.175 at seed 0 with generator version 2 (version 1: 0.300,
  # and 0.117-0.508 over seeds 0-9: this matcher is sensitive to the drawn
  # backgrounds); the band holds that spread, so a
  # drawing change that makes the set easy (> 0.6) or hides identity (< 0.1)
  # fails here.
  assert 0.1 <= rank1_gw <= 0.6


def test_reuses_a_complete_set_and_never_overwrites_another(tmp_path):
  out = str(tmp_path / "set")
  synthetic.generate_demo(out, 0, **_SMALL)
  manifest = os.path.join(out, synthetic.MANIFEST_NAME)
  before = os.stat(manifest).st_mtime_ns, _hashes(out)
  assert synthetic.generate_demo(out, 0, **_SMALL) == out
  assert (os.stat(manifest).st_mtime_ns, _hashes(out)) == before
  with pytest.raises(errors.DemoSetMismatchError, match=re.escape(manifest)):
    synthetic.generate_demo(out, 1, **_SMALL)
  assert _hashes(out) == before[1]
  # A modified set is reported, not silently reused.
  os.remove(os.path.join(out, "query", sorted(os.listdir(
      os.path.join(out, "query")))[0]))
  with pytest.raises(errors.DemoSetMismatchError, match="query holds 7"):
    synthetic.generate_demo(out, 0, **_SMALL)
  # No temporary folders left next to the output.
  assert os.listdir(tmp_path) == ["set"]


def test_refuses_a_foreign_folder_and_fills_an_empty_one(tmp_path):
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("user data")
  with pytest.raises(errors.DemoSetMismatchError, match=str(foreign)):
    synthetic.generate_demo(str(foreign), 0, **_SMALL)
  assert os.listdir(foreign) == ["notes.txt"]
  empty = tmp_path / "empty"
  empty.mkdir()
  synthetic.generate_demo(str(empty), 0, **_SMALL)
  assert len(_parse(str(empty))["query"]) == 4 * 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_cameras=1), "num_cameras"),
    (dict(num_cameras=10), "num_cameras"),
    (dict(images_per_camera=1), "images_per_camera"),
    (dict(num_test_ids=0), "num_test_ids"),
    (dict(num_train_ids=9000, num_test_ids=1000), "9999"),
    (dict(image_size=(16, 8)), "image_size"),
    (dict(num_cameras=2.5), "num_cameras"),
])
def test_bad_arguments_name_the_argument(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    synthetic.generate_demo(str(tmp_path / "set"), 0, **{**_SMALL, **kwargs})
  assert not os.path.exists(tmp_path / "set")
