"""Reader for CUHK03 (`cuhk-03.mat`) and its classic 1367/100 splits.

`cuhk-03.mat` (MATLAB v7.3 / HDF5) holds `labeled` and `detected` (1x5 cells,
one per camera pair, of (identities x 10) cells of HxWx3 uint8 images) and
`testsets` (1x20 cells of 100x2 [pair, person], 1-based). Cells 1-5 of a
person's row come from the pair's first camera, 6-10 from its second; empty
cells are skipped, as torchreid does. Pair p (1-based) has cameras 2(p-1) and
2(p-1)+1 (0-based); person k of pair p is pid p * 1000 + k.

The images are written once as PNG (`P_KKK_V_JJ.png`: pair, person, camera
of the pair 1/2, cell) with an `index.json` into the build dir, so later runs
do not open the 1.6 GB .mat again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Optional

import numpy as np
from PIL import Image

from data_pipelines import atomic
from data_pipelines import errors
from data_pipelines.readers import checks
from data_pipelines.records import Benchmark, ImageRecord

MAT_NAME = "cuhk-03.mat"
IMAGE_TYPES = ("labeled", "detected")
_EXTRACT_VERSION = 1
_INDEX_NAME = "index.json"

CUHK03_TREE = """\
  <root>/
    cuhk-03.mat   (MATLAB v7.3 / HDF5 with 'labeled', 'detected', 'testsets')"""


def pid_of(pair: int, person: int) -> int:
  """The pid of person `person` (1-based) of camera pair `pair` (1-based)."""
  return pair * 1000 + person


@dataclasses.dataclass(frozen=True)
class Cuhk03Images:
  """The extracted images of one kind and the published test sets.

  Attributes:
    images_root: the folder the PNG images were written to.
    records: every image, HR (pid = pair * 1000 + person, camid 0-9).
    testsets: the 20 classic test sets, each a tuple of 100 pids.
  """
  images_root: str
  records: tuple[ImageRecord, ...]
  testsets: tuple[tuple[int, ...], ...]


def _cell_refs(dataset) -> list:
  """The object references of a 1xN (or Nx1) MATLAB cell, in order."""
  return list(np.asarray(dataset[()]).reshape(-1))


def _read_mat(mat_path: str, image_type: str):
  """([name, pid, camid] per image, their HxWx3 arrays, the test sets)."""
  import h5py  # pylint: disable=g-import-not-at-top  (only CUHK03 needs it)
  try:
    mat = h5py.File(mat_path, "r")
  except OSError as e:
    raise errors.DatasetLayoutError(
        f"{mat_path} cannot be opened as MATLAB v7.3 (HDF5): {e}\n"
        f"Expected:\n{CUHK03_TREE}") from e
  with mat:
    missing = [k for k in (image_type, "testsets") if k not in mat]
    if missing:
      raise errors.DatasetLayoutError(
          f"{mat_path} lacks the variable(s) {missing}; it holds "
          f"{sorted(k for k in mat.keys() if not k.startswith('#'))}.\n"
          f"Expected:\n{CUHK03_TREE}")
    entries, images = [], []
    for pair, pair_ref in enumerate(_cell_refs(mat[image_type]), 1):
      # MATLAB stores arrays column-major: transposing gives (persons, 10).
      cells = np.asarray(mat[pair_ref][()]).T
      for person in range(1, cells.shape[0] + 1):
        for cell in range(1, cells.shape[1] + 1):
          pixels = np.asarray(mat[cells[person - 1, cell - 1]][()])
          if pixels.ndim < 3 or pixels.size == 0:
            continue  # an empty cell: no image in this slot
          view = 1 if cell <= 5 else 2
          entries.append([f"{pair}_{person:03d}_{view}_{cell:02d}.png",
                          pid_of(pair, person), 2 * (pair - 1) + view - 1])
          images.append(np.ascontiguousarray(pixels.T).astype(np.uint8))
    testsets = [tuple(pid_of(int(p), int(k))
                      for p, k in np.asarray(mat[ref][()]).T.reshape(-1, 2))
                for ref in _cell_refs(mat["testsets"])]
  return entries, images, testsets


def _save_png(path: str, pixels: np.ndarray) -> None:
  Image.fromarray(pixels).save(path, format="PNG")


def extract_cuhk03(root: str, *, build_dir: str,
                   image_type: str = "labeled") -> Cuhk03Images:
  """Reads cuhk-03.mat, writing its images as PNG into the build dir once.

  Args:
    root: the folder holding cuhk-03.mat.
    build_dir: where the extracted images go (never inside `root`).
    image_type: 'labeled' (hand-drawn boxes, default) or 'detected'.

  Returns:
    The extracted images and test sets.

  Raises:
    DatasetNotFoundError: `root` or cuhk-03.mat is missing.
    DatasetLayoutError: the file is not MATLAB v7.3 or lacks a variable.
    BuildDirError: `build_dir` lies inside `root`.
  """
  if image_type not in IMAGE_TYPES:
    raise ValueError(
        f"cuhk03_images must be one of {IMAGE_TYPES}, got {image_type!r}")
  root = checks.require_root(root, CUHK03_TREE, "CUHK03", [MAT_NAME])
  mat_path = os.path.join(root, MAT_NAME)
  build_dir = os.path.abspath(os.path.expanduser(build_dir))
  checks.require_outside(build_dir, [root])
  out = os.path.join(build_dir, f"cuhk03-{image_type}-images-"
                     f"{checks.root_tag(root)}")
  key = {"version": _EXTRACT_VERSION, "image_type": image_type,
         "mat_size": os.path.getsize(mat_path)}
  if not os.path.exists(out):
    entries, images, testsets = _read_mat(mat_path, image_type)
    try:
      with atomic.atomic_directory(out) as tmp:
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
          list(pool.map(_save_png, [os.path.join(tmp, e[0]) for e in entries],
                        images))
        with open(os.path.join(tmp, _INDEX_NAME), "w") as f:
          json.dump({"key": key, "images": entries,
                     "testsets": [list(t) for t in testsets]}, f, indent=1)
    except atomic.TargetExistsError:
      pass  # Another process extracted it meanwhile; checked below.
  try:
    with open(os.path.join(out, _INDEX_NAME)) as f:
      index = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.BuildDirError(
        f"{out} exists but is not a complete extraction ({e}); remove it.")
  if index.get("key") != key:
    raise errors.BuildDirError(
        f"{out} was extracted from a different cuhk-03.mat or version "
        f"({index.get('key')} vs {key}); remove it or choose another "
        f"build_dir.")
  records = tuple(ImageRecord(os.path.join(out, name), pid, camid)
                  for name, pid, camid in index["images"])
  return Cuhk03Images(out, records, tuple(tuple(t) for t in index["testsets"]))


def cuhk03_split(data: Cuhk03Images, split_index: int = 0, *,
                 lr_camera_in_pair: int = 1,
                 test_ids: Optional[Sequence[int]] = None) -> Benchmark:
  """The cross-resolution split: test identities' LR camera vs HR camera.

  The 100 identities of test set `split_index` are tested, the rest train.

  Args:
    data: from `extract_cuhk03`.
    split_index: which of the published test sets (0-based).
    lr_camera_in_pair: 1 (default) makes each pair's second camera the LR
      (query) side, 0 the first.
    test_ids: explicit test identities (pids as in this module) instead of a
      published test set.

  Returns:
    'mlr_cuhk03', single-shot: train = every image of the other identities,
    query = test images from the LR cameras, gallery = from the HR cameras.

  Raises:
    SplitError: bad split index, unknown test identities, or a query identity
      without a gallery image.
  """
  if lr_camera_in_pair not in (0, 1):
    raise ValueError(f"lr_camera_in_pair must be 0 or 1, got "
                     f"{lr_camera_in_pair!r}")
  if test_ids is None:
    if not 0 <= split_index < len(data.testsets):
      raise errors.SplitError(
          f"CUHK03 split_index {split_index} out of range: the .mat holds "
          f"{len(data.testsets)} test sets (0-{len(data.testsets) - 1}).")
    test_ids = data.testsets[split_index]
  test = checks.known_ids(test_ids, (r.pid for r in data.records), "CUHK03")
  tested = [r for r in data.records if r.pid in test]
  benchmark = checks.single_shot(
      "mlr_cuhk03", (r for r in data.records if r.pid not in test),
      (r for r in tested if r.camid % 2 == lr_camera_in_pair),
      (r for r in tested if r.camid % 2 != lr_camera_in_pair))
  checks.check_gallery_matches(benchmark.query, benchmark.gallery,
                               "mlr_cuhk03")
  return benchmark
