"""Reader for CAVIAR4REID, a genuinely cross-resolution set.

Names are `PPPPIII.jpg`: person PPPP (1-72), image III. Our reading of the
dataset description (Cheng et al., BMVC 2011: 72 people, 50 seen by both
cameras and 22 by one, 10 images per person and camera): images 001-010
come from the first camera (camid 0), 011-020 from the second (camid 1); a
single-camera person has 001-010 only, so camid 0 whichever camera saw them.

One camera sees people from afar. A genuine LR image is its own LR version
(`lr_path == hr_path`, `lr_factor == 1`: no artificial down-sampling), so
`ImageRecord.has_hr_original` is False: it trains the student's L_ID only
(phase 1 skips it, the phase-2 step masks it out of L_SR and L_PS). HR-camera
training images get a built LR version from the MLR builder, as elsewhere.
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
    root: the folder holding the PPPPIII.jpg images (CAVIARa/).

  Returns:
    Records sorted by name: pid as written, camid 0 (images 1-10) or 1.

  Raises:
    DatasetNotFoundError, DatasetLayoutError: a missing root, or one
      without images.
    FileNameError: a name that does not parse, or an image index outside
      1-20.
  """
  root = checks.require_root(root, CAVIAR_TREE)
  names = checks.list_images(root)
  if not names:
    raise checks.layout_error(
        root, f"{root} holds no CAVIAR4REID images", CAVIAR_TREE,
        lambda sub: any(_NAME.match(n) for n in checks.list_images(sub)))
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
    except errors.IMAGE_DECODE_ERRORS as e:
      raise errors.UnreadableImageError(f"Cannot read {r.hr_path}: {e}") from e
  return statistics.median(areas)


def caviar_split(records: Sequence[ImageRecord], *, seed: int = 0,
                 trial: int = 0, lr_camera: Union[str, int] = "auto",
                 test_ids: Optional[Sequence[int]] = None,
                 single_camera_train: bool = False,
                 genuine_lr_train: bool = True) -> Benchmark:
  """The seeded 25/25 split of the two-camera people, LR camera as query.

  SPEC 5: of the two-camera people, a seeded half is tested (LR-camera
  images as queries, HR-camera images the gallery, single-shot), the other
  half trains.

  Args:
    records: from `read_caviar`.
    seed: the benchmark seed.
    trial: the trial index (split_index): another permutation per trial,
      drawn with `numpy.random.default_rng([seed, trial])`.
    lr_camera: 0 or 1, or 'auto': the camera whose images have the smaller
      median area over the two-camera people.
    test_ids: explicit test identities instead of the seeded draw; each must
      be seen by both cameras.
    single_camera_train: also train on the people seen by one camera. Their
      camera is told by size: below the geometric mean of the two cameras'
      median areas, a person's images are the LR camera's.
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
    test = checks.known_ids(
        test_ids, both, "CAVIAR4REID",
        "not seen by both cameras (they have no gallery match)")
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
    areas = {pid: _median_area([r for r in single if r.pid == pid])
             for pid in {r.pid for r in single}}
    train += [r._replace(camid=lr_camera if areas[r.pid] < threshold
                         else 1 - lr_camera) for r in single]
  return checks.single_shot(
      "caviar", (genuine(r) if r.camid == lr_camera else r for r in train
                 if genuine_lr_train or r.camid != lr_camera),
      (genuine(r) for r in records if r.pid in test and r.camid == lr_camera),
      (r for r in records if r.pid in test and r.camid != lr_camera))
