"""Miniature copies of the published dataset layouts, for the reader tests.

Each maker writes a handful of tiny images that follow the real naming rules
(junk, distractors, non-image files included) and returns what it wrote, so
tests can compare parsed counts with what is on disk.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
from PIL import Image


def write_image(path: str, size: tuple[int, int], seed: int) -> None:
  """A random RGB image of `size` (width, height), format from the ending."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.default_rng(seed).integers(
      0, 256, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path)


# Market-1501 miniature: (folder, name). Train: ids 2 and 7; query: 1 (c1)
# and 3 (c2); gallery: matches, a same-camera image of 1, a distractor (0000)
# and a junk (-1) image; Thumbs.db is not an image and must be ignored.
MARKET_FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                           "0007_c3s1_000551_01.jpg", "0007_c6s1_000551_02.jpg",
                           "0007_c6s2_000771_01.jpg", "Thumbs.db"],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c2s1_000151_00.jpg"],
    "bounding_box_test": ["0001_c2s1_000301_02.jpg", "0001_c1s1_001101_01.jpg",
                          "0003_c5s1_000151_03.jpg", "0000_c1s1_000151_01.jpg",
                          "-1_c1s1_000401_03.jpg", "Thumbs.db"],
}
DUKE_FILES = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c8_f0046182.jpg",
                           "0004_c1_f0000001.jpg"],
    "query": ["0005_c2_f0046985.jpg"],
    "bounding_box_test": ["0005_c7_f0046999.jpg", "0000_c3_f0000003.jpg",
                          "-1_c1_f0000002.jpg"],
}
MARKET_SIZE = (16, 32)  # (width, height), Market's 64x128 shrunk 4x


def make_market(root: str, files: dict[str, list[str]] = None) -> str:
  """Writes a Market-style layout (MARKET_FILES by default) under `root`."""
  files = MARKET_FILES if files is None else files
  for seed, (folder, names) in enumerate(
      (f, n) for f, ns in files.items() for n in ns):
    path = os.path.join(root, folder, names)
    if names.endswith(".db"):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(b"not an image")
    else:
      write_image(path, MARKET_SIZE, seed)
  for folder in files:
    os.makedirs(os.path.join(root, folder), exist_ok=True)
  return root


def make_viper(root: str, num: int = 6, size: tuple[int, int] = (12, 32)
               ) -> str:
  """VIPeR: cam_a/NNN_45.bmp and cam_b/NNN_90.bmp, person numbers with gaps."""
  for i in range(num):
    number = 3 * i  # the published numbers have gaps too
    write_image(os.path.join(root, "cam_a", f"{number:03d}_45.bmp"), size, i)
    write_image(os.path.join(root, "cam_b", f"{number:03d}_90.bmp"), size,
                100 + i)
  return root


CAVIAR_BOTH = (1, 2, 3, 4, 5, 6)  # seen by both cameras
CAVIAR_SINGLE = (7, 8)  # seen by one camera (images 001-010 only)


CAVIAR_HR_SIZE, CAVIAR_LR_SIZE = (24, 48), (9, 20)


def make_caviar(root: str, both=CAVIAR_BOTH, single=CAVIAR_SINGLE,
                per_camera: int = 3, single_lr=()) -> str:
  """CAVIAR4REID: `per_camera` images per camera; camera 1 (011-020) is the
  small one. Single-camera people have images 001.. only, small (the LR
  camera's size) for the pids in `single_lr`."""
  seed = 0
  for pid in tuple(both) + tuple(single):
    first = tuple(range(1, per_camera + 1))
    indices = first + (tuple(range(11, 11 + per_camera)) if pid in both
                       else ())
    for index in indices:
      small = index > 10 or pid in single_lr
      size = CAVIAR_LR_SIZE if small else CAVIAR_HR_SIZE
      write_image(os.path.join(root, f"{pid:04d}{index:03d}.jpg"), size, seed)
      seed += 1
  with open(os.path.join(root, "Thumbs.db"), "wb") as f:
    f.write(b"x")
  return root


def cuhk03_pixels(kind: str, pair: int, person: int, cell: int
                  ) -> np.ndarray:
  """The HxWx3 image stored in cell `cell` (1-10) of person/pair (1-based)."""
  seed = ((("labeled", "detected").index(kind) * 10 + pair) * 1000
          + person) * 100 + cell
  height, width = 12 + cell, 5 + person  # different sizes catch transposes
  return np.random.default_rng(seed).integers(
      0, 256, (height, width, 3), dtype=np.uint8)


def make_cuhk03_mat(root: str, persons_per_pair=(3, 2, 2, 2, 2),
                    empty_cells=((1, 2, 4), (1, 2, 9)),
                    testsets=(((1, 1), (2, 2)), ((1, 3), (3, 1)))) -> str:
  """A miniature cuhk-03.mat in MATLAB v7.3 layout, written with h5py.

  As MATLAB writes it: variables are HDF5 datasets of object references into
  '#refs#', arrays stored transposed (column-major), empty cells as a uint64
  [0, 0] with the MATLAB_empty attribute.

  Args:
    root: the folder to write cuhk-03.mat into.
    persons_per_pair: persons in each of the 5 camera pairs.
    empty_cells: (pair, person, cell) triples (1-based) left empty.
    testsets: each a sequence of (pair, person), 1-based.

  Returns:
    The path of the .mat file.
  """
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, "cuhk-03.mat")
  with h5py.File(path, "w") as f:
    refs = f.create_group("#refs#")

    def put(array, empty=False):
      ds = refs.create_dataset(f"r{len(refs)}", data=array)
      if empty:
        ds.attrs["MATLAB_empty"] = np.uint8(1)
      return ds.ref

    for kind in ("labeled", "detected"):
      pair_refs = []
      for pair, persons in enumerate(persons_per_pair, 1):
        cells = np.empty((10, persons), dtype=h5py.ref_dtype)
        for person in range(1, persons + 1):
          for cell in range(1, 11):
            if (pair, person, cell) in empty_cells:
              cells[cell - 1, person - 1] = put(
                  np.zeros(2, np.uint64), empty=True)
            else:
              cells[cell - 1, person - 1] = put(
                  cuhk03_pixels(kind, pair, person, cell).T)
        pair_refs.append(put(cells))
      f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))
    set_refs = [put(np.array(t, dtype=np.float64).T) for t in testsets]
    f.create_dataset("testsets", data=np.array([set_refs],
                                               dtype=h5py.ref_dtype))
  return path


# Your own data (readers/folder.py): identity -> images. Without cameras:
# ROOT/<identity>/<image>; 'solo' has one image; notes.txt and .DS_Store are
# not images. With cameras: ROOT/<camera>/<identity>/<image>; 'eve' is seen
# by cam1 only.
FOLDER_IDS = {"alice": 5, "bob": 4, "carol": 3, "dave": 2, "erin": 6,
              "frank": 3, "gus": 4, "solo": 1}
FOLDER_CAMERAS = {"cam1": {"ann": 2, "ben": 1, "cat": 2, "dan": 2, "eve": 3,
                           "fay": 1},
                  "cam2": {"ann": 1, "ben": 2, "cat": 2, "dan": 1, "fay": 2}}
FOLDER_SIZE = (16, 32)


def make_folder(root: str, cameras: bool = False) -> str:
  """Writes a folder dataset (FOLDER_IDS, or FOLDER_CAMERAS) under `root`."""
  layout = FOLDER_CAMERAS if cameras else {"": FOLDER_IDS}
  seed = 0
  for camera, identities in layout.items():
    for identity, count in identities.items():
      for index in range(count):
        write_image(os.path.join(root, camera, identity, f"{index:04d}.jpg"),
                    FOLDER_SIZE, seed)
        seed += 1
  for name in ("notes.txt", os.path.join(next(iter(layout)), ".DS_Store")):
    with open(os.path.join(root, name), "wb") as f:
      f.write(b"not an image")
  return root
