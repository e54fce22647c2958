"""Reader for CAVIAR4REID, a genuinely cross-resolution set.

Expected layout (the published archive, unpacked; `root` is the folder that
holds the images, `CAVIARa/` in the archive):

    CAVIARa/
      0001001.jpg ... 0001020.jpg     person 0001, images 001-020
      0002001.jpg ...
      ...                             72 persons, 1220 images, 17x39 to 72x144

Names are `PPPPIII.jpg`: person PPPP (1-72), image III. Our reading of the
dataset description (Cheng et al., BMVC 2011: 72 people, 50 seen by both
cameras and 22 by one, 10 images per person and camera): images 001-010 come
from the first camera (camid 0) and 011-020 from the second (camid 1); a
single-camera person has images 001-010 only, so camid 0 for them, whichever
physical camera it was (it only matters for training). An image index
outside 1-20 is an error.

One camera sees people from afar (genuine low resolution). `lr_camera`
'auto' (default) picks the camera whose images have the smaller median area
over the two-camera people; 0 or 1 forces it. Cross-resolution protocol
(SPEC 5): of the 50 two-camera people, a seeded half (25) is tested: LR
camera images are the queries, HR camera images the gallery, single-shot.
The other 25 train; the 22 single-camera people are left out unless
`single_camera_train=True` adds them to the training set.

LR versions: nothing is down-sampled artificially on the query side. A
genuine LR image is its own LR version: `lr_path == hr_path` and
`lr_factor == 1` (factor 1 = "no artificial down-sampling"), so
`ImageRecord.has_hr_original` is False. Training images from the HR camera
get a seeded down-sampled LR version from the MLR builder like every other
set: those are the HR/LR pairs L_SR and L_PS train on. Genuine LR training
images (the training people's LR-camera images; `genuine_lr_train=False`
drops them) train the student's L_ID only: phase 1 (HR images only) skips
them and the phase-2 step masks them out of L_SR and L_PS.

A single-camera person's images are all numbered 001-010 whichever camera
saw them, so when they train, their camera is told by size: the person's
median image area is compared with the geometric mean of the two cameras'
medians (over the two-camera people); below it, they are genuine LR images
of the LR camera.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
from PIL import Image

from data_pipelines import errors
from data_pipelines.readers import checks
from data_pipelines.records import Benchmark, ImageRecord

CAVIAR_TREE = """\
  <root>/            (CAVIARa/ in the archive)
    0001001.jpg ... 0001020.jpg   (PPPPIII.jpg: person, image 001-020;
    0002001.jpg ...                001-010 camera 1, 011-020 camera 2)"""
_NAME = re.compile(r"^(\d{4})(\d{3})\.(?:jpe?g|png|bmp)$", re.IGNORECASE)


def read_caviar(root: str) -> tuple[ImageRecord, ...]:
  """Reads every CAVIAR4REID image (HR records; LR not yet assigned).

  Args:
    root: the folder holding the PPPPIII.jpg images.

  Returns:
    Records sorted by name: pid as written, camid 0 (images 1-10) or 1.

  Raises:
    DatasetNotFoundError, DatasetLayoutError, FileNameError: see module doc.
  """
  root = checks.require_root(root, CAVIAR_TREE)
  names = checks.list_images(root)
  if not names:
    hint = ""
    for child in sorted(os.listdir(root)):
      sub = os.path.join(root, child)
      if os.path.isdir(sub) and any(
          _NAME.match(n) for n in checks.list_images(sub)):
        hint = f"\nDid you mean root={sub} ?"
        break
    raise errors.DatasetLayoutError(
        f"{root} holds no CAVIAR4REID images; found: "
        f"{checks.list_names(sorted(os.listdir(root))) or '(empty)'}\n"
        f"Expected:\n{CAVIAR_TREE}{hint}")
  records, bad = [], []
  for name in names:
    match = _NAME.match(name)
    index = int(match.group(2)) if match else 0
    if not match or not 1 <= index <= 20:
      bad.append(name)
      continue
    records.append(ImageRecord(os.path.join(root, name), int(match.group(1)),
                               0 if index <= 10 else 1))
  checks.raise_unparsable(root, bad, "PPPPIII.jpg with image III in 001-020",
                          CAVIAR_TREE)
  return tuple(records)


def _median_area(records: Sequence[ImageRecord]) -> float:
  areas = []
  for r in records:
    try:
      with Image.open(r.hr_path) as image:
        areas.append(image.size[0] * image.size[1])
    except OSError as e:
      raise errors.UnreadableImageError(f"Cannot read {r.hr_path}: {e}") from e
  return statistics.median(areas)


def _person_areas(records: Sequence[ImageRecord]) -> dict[int, float]:
  by_pid: dict[int, list[ImageRecord]] = {}
  for r in records:
    by_pid.setdefault(r.pid, []).append(r)
  return {pid: _median_area(rs) for pid, rs in by_pid.items()}


def caviar_split(records: Sequence[ImageRecord], *, seed: int = 0,
                 trial: int = 0, lr_camera: Union[str, int] = "auto",
                 test_ids: Optional[Sequence[int]] = None,
                 single_camera_train: bool = False,
                 genuine_lr_train: bool = True) -> Benchmark:
  """The seeded 25/25 split of the two-camera people, LR camera as query.

  Args:
    records: from `read_caviar`.
    seed: the benchmark seed.
    trial: the trial index (split_index): another permutation per trial,
      drawn with `numpy.random.default_rng([seed, trial])`.
    lr_camera: 'auto', 0 or 1 (see module doc).
    test_ids: explicit test identities instead of the seeded draw; each must
      be seen by both cameras.
    single_camera_train: also train on the people seen by one camera.
    genuine_lr_train: train on the genuine LR images of the training people
      (L_ID only); False keeps only HR-camera images.

  Returns:
    'caviar', single-shot. Query and genuine LR training records carry
    lr_path == hr_path, lr_factor 1; HR-camera training records have no LR
    version yet (the MLR builder makes one).

  Raises:
    SplitError: fewer than two two-camera people, or test identities that
      are unknown or not seen by both cameras.
  """
  cams: dict[int, set[int]] = {}
  for r in records:
    cams.setdefault(r.pid, set()).add(r.camid)
  both = sorted(pid for pid, c in cams.items() if len(c) == 2)
  if len(both) < 2:
    raise errors.SplitError(
        f"CAVIAR4REID needs people seen by both cameras to test on; found "
        f"{len(both)} (50 as published).")
  if test_ids is None:
    order = np.random.default_rng([seed, trial]).permutation(len(both))
    test = {both[i] for i in order[:len(both) // 2]}
  else:
    test = set(test_ids)
    bad = sorted(test - set(both))
    if bad:
      raise errors.SplitError(
          f"CAVIAR4REID test identities must be seen by both cameras (have a "
          f"gallery match); these are not: {checks.list_names(bad)}")
  two_cam = set(both)
  single = [r for r in records if r.pid not in two_cam]
  if lr_camera == "auto" or (single_camera_train and single):
    # Median image area per camera over the two-camera people.
    cam_areas = [_median_area([r for r in records if r.pid in two_cam
                               and r.camid == c]) for c in (0, 1)]
  if lr_camera == "auto":
    lr_camera = 0 if cam_areas[0] < cam_areas[1] else 1
  if lr_camera not in (0, 1):
    raise ValueError(f"lr_camera must be 'auto', 0 or 1, got {lr_camera!r}")

  def genuine(r: ImageRecord) -> ImageRecord:
    return r._replace(lr_path=r.hr_path, lr_factor=1)

  train = [r for r in records if r.pid in two_cam and r.pid not in test]
  if single_camera_train and single:
    threshold = (cam_areas[0] * cam_areas[1]) ** 0.5
    areas = _person_areas(single)
    train += [r._replace(camid=lr_camera if areas[r.pid] < threshold
                         else 1 - lr_camera) for r in single]
  train = tuple(genuine(r) if r.camid == lr_camera else r for r in train
                if genuine_lr_train or r.camid != lr_camera)
  query = tuple(genuine(r) for r in records
                if r.pid in test and r.camid == lr_camera)
  gallery = tuple(r for r in records if r.pid in test and r.camid != lr_camera)
  for name, split in (("train", train), ("query", query),
                      ("gallery", gallery)):
    checks.require_nonempty(name, split, "caviar")
  return Benchmark("caviar", train, query, gallery, "single_shot")
