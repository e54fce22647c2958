"""A built-in synthetic re-ID set: procedurally drawn people seen by cameras.

`generate_demo` writes a Market-1501-style HR layout that the demo config
trains on without any download (synthetic_drawing.py draws the people and
cameras). Each image draws from its own generator keyed by (seed, pid,
camera, index), so the output is byte-identical on regeneration.
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_pipelines import atomic
from data_pipelines.builders import synthetic_drawing
from data_pipelines.errors import DemoSetMismatchError

JPEG_QUALITY = 90
# Bump when the drawing changes: an old set on disk is then reported, not
# silently reused with different pixels.
GENERATOR_VERSION = 2
MANIFEST_NAME = "synthetic_demo.json"
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")


def _validate(seed: int, num_train_ids: int, num_test_ids: int,
              num_cameras: int, images_per_camera: int,
              image_size: tuple[int, int]) -> None:
  """Raises ValueError naming the first argument out of range."""
  limits = {"seed": (seed, 0, 2**63), "num_train_ids": (num_train_ids, 1, 9998),
            "num_test_ids": (num_test_ids, 1, 9998),
            # One-digit camera ids in the names; cross-camera needs two.
            "num_cameras": (num_cameras, 2, 9),
            # Each test identity keeps gallery images besides its queries.
            "images_per_camera": (images_per_camera, 2, 10000)}
  for name, (value, low, high) in limits.items():
    if not isinstance(value, (int, np.integer)) or not low <= value <= high:
      raise ValueError(f"{name} must be an integer in [{low}, {high}], got "
                       f"{value!r}")
  if num_train_ids + num_test_ids > 9999:
    raise ValueError("Market-1501 names hold 4-digit identities, but "
                     f"num_train_ids + num_test_ids = "
                     f"{num_train_ids + num_test_ids} > 9999")
  if len(image_size) != 2 or image_size[0] < 32 or image_size[1] < 16:
    raise ValueError("image_size must be (height >= 32, width >= 16), got "
                     f"{image_size!r}")


def _is_complete(out_dir: str, manifest: dict) -> bool:
  """True if out_dir holds this exact set, False if it is empty, else raises."""
  path = os.path.join(out_dir, MANIFEST_NAME)
  if not os.path.isfile(path):
    if os.listdir(out_dir):
      raise DemoSetMismatchError(
          f"{out_dir} is not empty and has no {MANIFEST_NAME}: it is not a "
          "synthetic demo set; refusing to write into it")
    return False
  with open(path) as f:
    try:
      found = json.load(f)
    except json.JSONDecodeError as err:
      raise DemoSetMismatchError(f"{path} is not valid JSON ({err}); delete "
                                 "the folder to regenerate") from err
  wanted = {k: manifest[k] for k in ("generator_version", "arguments")}
  have = {k: found.get(k) for k in wanted}
  if have != wanted:
    raise DemoSetMismatchError(
        f"{path} records {json.dumps(have)}, but {json.dumps(wanted)} was "
        "asked for; use another out_dir or delete this one (it is never "
        "overwritten)")
  for split, count in manifest["counts"].items():
    split_dir = os.path.join(out_dir, split)
    have_count = (sum(n.endswith(".jpg") for n in os.listdir(split_dir))
                  if os.path.isdir(split_dir) else 0)
    if have_count != count:
      raise DemoSetMismatchError(
          f"{split_dir} holds {have_count} images, {path} says {count}: the "
          "set was modified; delete the folder to regenerate")
  return True


def _write_images(root: str, seed: int, num_train_ids: int, num_test_ids: int,
                  num_cameras: int, images_per_camera: int,
                  image_size: tuple[int, int]) -> dict[str, int]:
  """Renders every image into root/<split>/ and returns the count per split."""
  total = num_train_ids + num_test_ids
  people = synthetic_drawing.sample_identities(seed, total)
  cameras = [synthetic_drawing.sample_camera(np.random.default_rng([seed, 2, c]),
                                             c, image_size)
             for c in range(num_cameras)]
  # Train and test identities interleave over 1..total as in Market-1501,
  # so code that confuses a pid with a class label fails on this set too.
  order = np.random.default_rng([seed, 3]).permutation(total) + 1
  test_pids = set(int(p) for p in order[num_train_ids:])
  counts = dict.fromkeys(SPLIT_DIRS, 0)
  for split in SPLIT_DIRS:
    os.makedirs(os.path.join(root, split))
  for pid in range(1, total + 1):
    for cam in range(num_cameras):
      for index in range(images_per_camera):
        rng = np.random.default_rng([seed, 4, pid, cam, index])
        img = synthetic_drawing.render_image(people[pid - 1], cameras[cam],
                                             rng, image_size)
        # One query per test (identity, camera), the rest in the gallery.
        split = ("bounding_box_train" if pid not in test_pids
                 else "query" if index == 0 else "bounding_box_test")
        frame = ((pid - 1) * images_per_camera + index) * 5 + 1
        name = f"{pid:04d}_c{cam + 1}s1_{frame:06d}_01.jpg"
        img.save(os.path.join(root, split, name), "JPEG", quality=JPEG_QUALITY)
        counts[split] += 1
  return counts


def generate_demo(out_dir: str, seed: int = 0, *, num_train_ids: int = 120,
                  num_test_ids: int = 40, num_cameras: int = 3,
                  images_per_camera: int = 4,
                  image_size: tuple[int, int] = (64, 32)) -> str:
  """Writes (or reuses) the synthetic demo set in Market-1501 HR layout.

  Identities 1..num_train_ids+num_test_ids are split at random (seeded) into
  train and test; each gets `images_per_camera` images from every camera.
  For a test identity the first image of each camera is a query, the rest
  gallery, so each query has gallery matches in every other camera. The set
  is written atomically; `synthetic_demo.json` records the arguments, and a
  second call with the same ones reuses the set.

  Args:
    out_dir: folder to create (or an empty one).
    seed: the output is a pure function of the seed and the other arguments.
    num_train_ids: training identities.
    num_test_ids: test identities (query + gallery).
    num_cameras: cameras, 2..9.
    images_per_camera: images per identity and camera, >= 2.
    image_size: (height, width) of the HR images.

  Returns:
    out_dir.

  Raises:
    ValueError: an argument out of range.
    DemoSetMismatchError: out_dir holds a different set or something else.
  """
  image_size = tuple(int(v) for v in image_size)
  _validate(seed, num_train_ids, num_test_ids, num_cameras, images_per_camera,
            image_size)
  num_test = num_test_ids * num_cameras
  manifest = {
      "generator": "data_pipelines.builders.synthetic.generate_demo",
      "generator_version": GENERATOR_VERSION,
      "arguments": {"seed": int(seed), "num_train_ids": num_train_ids,
                    "num_test_ids": num_test_ids, "num_cameras": num_cameras,
                    "images_per_camera": images_per_camera,
                    "image_size": list(image_size)},
      "counts": {
          "bounding_box_train": num_train_ids * num_cameras * images_per_camera,
          "query": num_test,
          "bounding_box_test": num_test * (images_per_camera - 1)},
      "jpeg_quality": JPEG_QUALITY,
  }
  target = os.path.abspath(os.fspath(out_dir))
  if os.path.isdir(target) and _is_complete(target, manifest):
    return out_dir
  if os.path.exists(target) and not os.path.isdir(target):
    raise DemoSetMismatchError(f"{target} exists and is not a folder")
  try:
    with atomic.atomic_directory(target) as tmp:
      counts = _write_images(tmp, int(seed), num_train_ids, num_test_ids,
                             num_cameras, images_per_camera, image_size)
      assert counts == manifest["counts"], (counts, manifest["counts"])
      # The manifest goes in last: its presence marks a complete set.
      with open(os.path.join(tmp, MANIFEST_NAME), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
  except atomic.TargetExistsError:
    # Another process finished the same set first: reuse it if it matches.
    if not _is_complete(target, manifest):
      raise
  return out_dir
