"""Reader for VIPeR and its seeded 316/316 splits.

cam_a/ and cam_b/ pair by sorted file order, as torchreid does. When both
names start with a number (`NNN_angle.bmp`, as published) the numbers must
agree and are the pid; otherwise the pid is the pair's 1-based position.
cam_a is camera 0, cam_b camera 1.
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
  """One (cam_a, cam_b) record pair per identity, in sorted order.

  Args:
    root: the folder holding cam_a/ and cam_b/.

  Returns:
    The pairs.

  Raises:
    DatasetNotFoundError, DatasetLayoutError: missing root or folders, or
      the folders hold different numbers of images.
    FileNameError: paired names carry different person numbers.
  """
  root = checks.require_root(root, VIPER_TREE, "VIPeR", CAMERAS)
  cam_a, cam_b = (checks.list_images(os.path.join(root, c)) for c in CAMERAS)
  if len(cam_a) != len(cam_b) or not cam_a:
    raise errors.DatasetLayoutError(
        f"VIPeR at {root}: cam_a/ holds {len(cam_a)} images and cam_b/ "
        f"{len(cam_b)}; they must be equal and non-zero (632 as published)."
        f"\nExpected:\n{VIPER_TREE}")
  numbers = [(_NUMBER.match(a), _NUMBER.match(b)) for a, b in zip(cam_a, cam_b)]
  pids = range(1, len(cam_a) + 1)
  if all(a and b for a, b in numbers):
    bad = [f"{a} / {b}" for a, b, (ma, mb) in zip(cam_a, cam_b, numbers)
           if int(ma.group(1)) != int(mb.group(1))]
    if bad:
      raise errors.FileNameError(
          f"VIPeR at {root}: sorted cam_a/ and cam_b/ images do not pair by "
          f"person number: {checks.list_names(bad)}")
    pids = [int(ma.group(1)) for ma, _ in numbers]
  return tuple((ImageRecord(os.path.join(root, "cam_a", a), pid, 0),
                ImageRecord(os.path.join(root, "cam_b", b), pid, 1))
               for a, b, pid in zip(cam_a, cam_b, pids))


def viper_split(pairs: Sequence[tuple[ImageRecord, ImageRecord]], *,
                seed: int = 0, trial: int = 0, lr_camera: str = "cam_b",
                test_ids: Optional[Sequence[int]] = None) -> Benchmark:
  """The seeded half/half split, LR camera as query (single-shot).

  The identities are permuted by `numpy.random.default_rng([seed, trial])`:
  the first half trains, the other half is tested.

  Args:
    pairs: from `read_viper`.
    seed: the benchmark seed.
    trial: the trial index (split_index).
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
    test = checks.known_ids(test_ids, pids, "VIPeR")
  lr = CAMERAS.index(lr_camera)
  tested = [pair for pair in pairs if pair[0].pid in test]
  return checks.single_shot(
      "mlr_viper", (r for pair in pairs if pair[0].pid not in test
                    for r in pair),
      (pair[lr] for pair in tested), (pair[1 - lr] for pair in tested))
