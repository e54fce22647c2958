"""Your own data: a folder per identity, optionally inside a folder per camera.

    ROOT/<identity>/<image>             images 2 levels down: no cameras
    ROOT/<camera>/<identity>/<image>    images 3 levels down: cameras

Every image must sit at the same depth. Identities are folder names, matched
across cameras by name; pids are their 1-based positions in sorted order,
camera ids the cameras' 0-based positions (0 for everything without cameras).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from data_pipelines import errors
from data_pipelines.readers import checks
from data_pipelines.records import Benchmark, ImageRecord
from data_pipelines.records import QUERY_IMAGE_ONLY
from data_pipelines.records import SAME_IDENTITY_SAME_CAMERA

NAME = "folder"
FOLDER_TREE = """\
  <root>/                          or    <root>/
    alice/  0001.jpg 0002.jpg ...          cam_a/  alice/ 0001.jpg ...
    bob/    0001.jpg ...                           bob/   0001.jpg ...
    (a folder per identity)                cam_b/  alice/ 0007.jpg ...
                                           (a folder per camera, then identity)"""


@dataclasses.dataclass(frozen=True)
class FolderData:
  """What `read_folder` found.

  Attributes:
    records: every image, sorted by path (HR only, no LR versions).
    identities: identity folder names; pid p is identities[p - 1].
    cameras: camera folder names (camid c is cameras[c]); empty without.
  """
  records: tuple[ImageRecord, ...]
  identities: tuple[str, ...]
  cameras: tuple[str, ...]

  @property
  def has_cameras(self) -> bool:
    return bool(self.cameras)


def _entries(folder: str) -> tuple[list[str], list[str]]:
  """(sub-folders, image files) directly in `folder`, sorted, hidden skipped."""
  names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
  folders = [n for n in names if os.path.isdir(os.path.join(folder, n))]
  return folders, checks.list_images(folder)


def _layout_error(root: str, message: str) -> errors.DatasetLayoutError:
  return errors.DatasetLayoutError(
      f"{root} is not a folder dataset: {message}\nExpected:\n{FOLDER_TREE}")


def _identity_images(root: str, folder: str) -> list[str]:
  """The images of an identity folder, which may hold nothing else."""
  subfolders, images = _entries(folder)
  if subfolders:
    raise _layout_error(
        root, f"{os.path.join(folder, subfolders[0])} is a folder inside an "
        f"identity folder (images must sit directly in it)")
  if not images:
    raise _layout_error(root, f"{folder} holds no images")
  return images


def read_folder(root: str) -> FolderData:
  """Reads ROOT/<identity>/<image> or ROOT/<camera>/<identity>/<image>.

  Args:
    root: the dataset folder.

  Returns:
    The records, identities and cameras found.

  Raises:
    DatasetNotFoundError: `root` is missing.
    DatasetLayoutError: neither layout: images directly under `root`, a
      top-level folder holding both images and folders, the two layouts
      mixed, folders nested deeper, or a folder without images; the message
      names the path.
  """
  root = checks.require_root(root, FOLDER_TREE)
  top, loose = _entries(root)
  if loose:
    raise _layout_error(
        root, f"images directly in it ({checks.list_names(loose)}); put "
        f"each identity's images in a folder of its own")
  if not top:
    raise _layout_error(root, "it holds no folders")
  kinds = {}
  for name in top:
    path = os.path.join(root, name)
    subfolders, images = _entries(path)
    if subfolders and images:
      raise _layout_error(root, f"{path} holds both images and folders")
    if not subfolders and not images:
      raise _layout_error(root, f"{path} holds no images or folders")
    kinds[name] = "camera" if subfolders else "identity"
  if len(set(kinds.values())) > 1:
    camera = next(n for n, k in kinds.items() if k == "camera")
    identity = next(n for n, k in kinds.items() if k == "identity")
    raise _layout_error(
        root, f"{os.path.join(root, identity)} holds images (an identity "
        f"folder) but {os.path.join(root, camera)} holds folders (a camera "
        f"folder); use one layout")
  cameras = tuple(top) if kinds[top[0]] == "camera" else ()
  files = []  # (camera name or None, identity name, path)
  for camera in cameras or (None,):
    parent = os.path.join(root, camera) if camera else root
    for identity in _entries(parent)[0] if camera else top:
      folder = os.path.join(parent, identity)
      files += [(camera, identity, os.path.join(folder, image))
                for image in _identity_images(root, folder)]
  identities = tuple(sorted({identity for _, identity, _ in files}))
  pid = {name: index + 1 for index, name in enumerate(identities)}
  camid = {name: index for index, name in enumerate(cameras)}
  records = tuple(sorted(
      (ImageRecord(path, pid[identity], camid.get(camera, 0))
       for camera, identity, path in files), key=lambda r: r.hr_path))
  return FolderData(records, identities, cameras)


def _check_fraction(name: str, value: float) -> float:
  if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
    raise errors.SplitError(f"folder option {name}={value!r} must lie "
                            f"strictly between 0 and 1")
  return float(value)


def _round(x: float) -> int:
  return int(math.floor(x + 0.5))


def _pick_queries(images: list[ImageRecord], wanted: int,
                  rng: np.random.Generator, has_cameras: bool
                  ) -> set[str]:
  """Up to `wanted` query paths, each keeping a match in the gallery."""
  queries: list[ImageRecord] = []
  for index in rng.permutation(len(images)):
    if len(queries) == wanted:
      break
    candidate = images[index]
    chosen = {r.hr_path for r in queries} | {candidate.hr_path}
    gallery_cams = {r.camid for r in images if r.hr_path not in chosen}
    if not gallery_cams or (has_cameras and any(
        not gallery_cams - {r.camid} for r in queries + [candidate])):
      continue
    queries.append(candidate)
  return {r.hr_path for r in queries}


def folder_split(data: FolderData, *, seed: int = 0,
                 train_fraction: float = 0.5,
                 query_fraction: float = 0.2) -> Benchmark:
  """The seeded split by identity, multi-shot.

  A `train_fraction` of the identities trains; of every other identity a
  `query_fraction` of its images are queries (picked in a seeded order,
  skipping images that would leave a query without a gallery match: with
  cameras, an image of its identity from another camera; without, any other
  image), the rest gallery. Test identities that cannot have a match stay in
  the gallery as distractors.

  Args:
    data: from `read_folder`.
    seed: the benchmark seed.
    train_fraction: fraction of the identities that train, rounded (half
      up) and kept between 1 and all but one.
    query_fraction: fraction of each test identity's images that are
      queries, rounded (half up), at least 1 and at most all but one.

  Returns:
    The 'folder' Benchmark; without cameras its gallery_exclusion is
    QUERY_IMAGE_ONLY (the evaluation removes only the query itself).

  Raises:
    SplitError: a fraction outside (0, 1), fewer than 2 identities, or no
      test identity that can have a query.
  """
  train_fraction = _check_fraction("train_fraction", train_fraction)
  query_fraction = _check_fraction("query_fraction", query_fraction)
  num_ids = len(data.identities)
  if num_ids < 2:
    raise errors.SplitError(
        f"folder: {num_ids} identity found; a train/test split needs at "
        f"least 2")
  num_train = min(max(_round(train_fraction * num_ids), 1), num_ids - 1)
  order = np.random.default_rng([seed, 0]).permutation(num_ids)
  train_pids = {int(i) + 1 for i in order[:num_train]}
  by_pid: dict[int, list[ImageRecord]] = {}
  for record in data.records:
    by_pid.setdefault(record.pid, []).append(record)
  query_paths: set[str] = set()
  for pid in sorted(set(by_pid) - train_pids):
    images = by_pid[pid]
    wanted = min(max(_round(query_fraction * len(images)), 1),
                 len(images) - 1)
    if wanted >= 1:
      query_paths |= _pick_queries(
          images, wanted, np.random.default_rng([seed, 1, pid]),
          data.has_cameras)
  train = tuple(r for r in data.records if r.pid in train_pids)
  query = tuple(r for r in data.records if r.hr_path in query_paths)
  gallery = tuple(r for r in data.records if r.pid not in train_pids
                  and r.hr_path not in query_paths)
  if not query:
    raise errors.SplitError(
        f"folder: no test identity can have a query: each has one image"
        f"{' or one camera' if data.has_cameras else ''}; add images or "
        f"lower train_fraction")
  rule = SAME_IDENTITY_SAME_CAMERA if data.has_cameras else QUERY_IMAGE_ONLY
  return Benchmark(NAME, train, query, gallery, "multi_shot", rule)
