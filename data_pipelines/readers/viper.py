"""Reader for VIPeR and its seeded 316/316 splits.

Expected layout (the published archive, unpacked):

    VIPeR/
      cam_a/   000_45.bmp  001_45.bmp ...   632 images, 128x48 (H x W)
      cam_b/   000_90.bmp  001_90.bmp ...   632 images

The two folders are paired by sorted file order, as torchreid does: the i-th
image of cam_a and the i-th of cam_b show the same person. When both names
start with a number (`NNN_angle.bmp`, as published), the numbers must agree
(a check that sorted order really pairs them) and that number is the pid;
otherwise the pid is the pair's position, 1-based. cam_a is camera 0, cam_b
camera 1.

Split `trial` with `seed`: the identities are permuted by
`numpy.random.default_rng([seed, trial])`; the first half (316) train, the
other half test. For the cross-resolution set camera B is the LR (query)
side and camera A the HR gallery, single-shot (SPEC 5).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Optional

import numpy as np

from data_pipelines import errors
from data_pipelines.readers import checks
from data_pipelines.records import Benchmark, ImageRecord

CAMERAS = ("cam_a", "cam_b")
VIPER_TREE = """\
  <root>/
    cam_a/   000_45.bmp 001_45.bmp ...  (632 images, 128x48)
    cam_b/   000_90.bmp 001_90.bmp ...  (632 images, paired by sorted order)"""
_NUMBER = re.compile(r"^(\d+)_")


def read_viper(root: str) -> tuple[tuple[ImageRecord, ImageRecord], ...]:
  """Reads the VIPeR pairs.

  Args:
    root: the folder holding cam_a/ and cam_b/.

  Returns:
    One (cam_a record, cam_b record) pair per identity, in sorted order.

  Raises:
    DatasetNotFoundError, DatasetLayoutError: missing root or folders, or
      the folders hold different numbers of images.
    FileNameError: paired names carry different person numbers.
  """
  root = checks.require_root(root, VIPER_TREE)
  checks.require_entries(root, list(CAMERAS), VIPER_TREE, "VIPeR")
  names = {cam: checks.list_images(os.path.join(root, cam)) for cam in CAMERAS}
  if len(names["cam_a"]) != len(names["cam_b"]) or not names["cam_a"]:
    raise errors.DatasetLayoutError(
        f"VIPeR at {root}: cam_a/ holds {len(names['cam_a'])} images and "
        f"cam_b/ {len(names['cam_b'])}; they must be equal and non-zero (632 "
        f"as published).\nExpected:\n{VIPER_TREE}")
  numbers = [(_NUMBER.match(a), _NUMBER.match(b))
             for a, b in zip(names["cam_a"], names["cam_b"])]
  numbered = all(a and b for a, b in numbers)
  if numbered:
    bad = [f"{a} / {b}" for a, b, (ma, mb) in
           zip(names["cam_a"], names["cam_b"], numbers)
           if int(ma.group(1)) != int(mb.group(1))]
    if bad:
      raise errors.FileNameError(
          f"VIPeR at {root}: sorted cam_a/ and cam_b/ images do not pair by "
          f"person number: {checks.list_names(bad)}")
  pairs = []
  for index, (a, b) in enumerate(zip(names["cam_a"], names["cam_b"])):
    pid = int(numbers[index][0].group(1)) if numbered else index + 1
    pairs.append((ImageRecord(os.path.join(root, "cam_a", a), pid, 0),
                  ImageRecord(os.path.join(root, "cam_b", b), pid, 1)))
  return tuple(pairs)


def viper_split(pairs: Sequence[tuple[ImageRecord, ImageRecord]], *,
                seed: int = 0, trial: int = 0, lr_camera: str = "cam_b",
                test_ids: Optional[Sequence[int]] = None) -> Benchmark:
  """The seeded half/half split, LR camera as query.

  Args:
    pairs: from `read_viper`.
    seed: the benchmark seed.
    trial: the trial index (split_index); each gives another permutation.
    lr_camera: 'cam_b' (default, SPEC 5) or 'cam_a': the query side.
    test_ids: explicit test identities instead of the seeded draw.

  Returns:
    'mlr_viper', single-shot: train = both images of the training
    identities, query = the LR camera's test images, gallery = the other's.

  Raises:
    SplitError: unknown test identities, or a split would be empty.
  """
  if lr_camera not in CAMERAS:
    raise ValueError(f"lr_camera must be one of {CAMERAS}, got {lr_camera!r}")
  pids = [a.pid for a, _ in pairs]
  if test_ids is None:
    order = np.random.default_rng([seed, trial]).permutation(len(pairs))
    test = {pids[i] for i in order[len(pairs) // 2:]}
  else:
    test = set(test_ids)
    unknown = sorted(test - set(pids))
    if unknown:
      raise errors.SplitError(
          f"VIPeR test identities not in the data: "
          f"{checks.list_names(unknown)}")
  lr = CAMERAS.index(lr_camera)
  train = tuple(r for pair in pairs if pair[0].pid not in test for r in pair)
  query = tuple(pair[lr] for pair in pairs if pair[0].pid in test)
  gallery = tuple(pair[1 - lr] for pair in pairs if pair[0].pid in test)
  for name, split in (("train", train), ("query", query),
                      ("gallery", gallery)):
    checks.require_nonempty(name, split, "mlr_viper")
  return Benchmark("mlr_viper", train, query, gallery, "single_shot")
