"""Readers for Market-1501 and DukeMTMC-reID, and pre-built MLR folders.

Expected layout (the published archives, unpacked; point `root` at the folder
that holds the three split folders):

    Market-1501-v15.09.15/            DukeMTMC-reID/
      bounding_box_train/               bounding_box_train/
        0002_c1s1_000451_03.jpg           0001_c2_f0046182.jpg
      query/                            query/
        0001_c1s1_001051_00.jpg           0005_c2_f0046985.jpg
      bounding_box_test/                bounding_box_test/
        0000_c1s1_000151_01.jpg           0001_c2_f0046999.jpg
        -1_c1s1_000401_03.jpg
      (gt_bbox/, gt_query/, ... ignored)

Naming: Market `PPPP_cCsS_FFFFFF_BB.jpg`, Duke `PPPP_cC_fFFFFFFF.jpg`: person
PPPP, camera C (Market 1-6, Duke 1-8, stored 0-based). Person -1 is junk
(dropped, as torchreid does); person 0 marks distractors, kept in the gallery
and an error anywhere else. Files that are not images (Thumbs.db) are ignored;
an image whose name does not parse is an error naming it. `.png`/`.bmp`
endings are accepted as well, for re-encoded copies.

Pre-built MLR folders (as the released code and other groups distribute
MLR-Market / MLR-Duke) use the same layout with LR images under the same file
names: `read_prebuilt_lr` pairs them with the HR originals by file name.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

from PIL import Image

from data_pipelines import errors
from data_pipelines.readers import checks
from data_pipelines.records import Benchmark, ImageRecord

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query",
              "gallery": "bounding_box_test"}

MARKET_TREE = """\
  <root>/
    bounding_box_train/   0002_c1s1_000451_03.jpg ...  (PPPP_cCsS_FFFFFF_BB.jpg)
    query/                0001_c1s1_001051_00.jpg ...
    bounding_box_test/    0000_c1s1_000151_01.jpg, -1_c1s1_000401_03.jpg ..."""

DUKE_TREE = """\
  <root>/
    bounding_box_train/   0001_c2_f0046182.jpg ...  (PPPP_cC_fFFFFFFF.jpg)
    query/                0005_c2_f0046985.jpg ...
    bounding_box_test/    0001_c2_f0046999.jpg ..."""

_EXT = r"\.(?:jpe?g|png|bmp)$"


class _Layout:
  """How one dataset names its files."""

  def __init__(self, name: str, pattern: str, rule: str, num_cameras: int,
               tree: str):
    self.name = name
    self.pattern = re.compile(pattern + _EXT, re.IGNORECASE)
    self.rule = rule
    self.num_cameras = num_cameras
    self.tree = tree


LAYOUTS = {
    "market1501": _Layout("Market-1501", r"^(-1|\d+)_c(\d)s\d+_\d+_\d+",
                          "PPPP_cCsS_FFFFFF_BB.jpg", 6, MARKET_TREE),
    "dukemtmc": _Layout("DukeMTMC-reID", r"^(-1|\d+)_c(\d)_f\d+",
                        "PPPP_cC_fFFFFFFF.jpg", 8, DUKE_TREE),
}


def _layout(dataset: str) -> _Layout:
  if dataset not in LAYOUTS:
    raise ValueError(f"Unknown Market-style dataset {dataset!r}; expected one "
                     f"of {sorted(LAYOUTS)}.")
  return LAYOUTS[dataset]


def _read_split(folder: str, split: str, layout: _Layout) -> list[ImageRecord]:
  """Parses one split folder; junk dropped, distractors only in the gallery."""
  records, bad, misplaced = [], [], []
  for name in checks.list_images(folder):
    match = layout.pattern.match(name)
    if not match:
      bad.append(name)
      continue
    pid, cam = int(match.group(1)), int(match.group(2))
    if not 1 <= cam <= layout.num_cameras:
      bad.append(name)
      continue
    if pid == -1:
      continue
    if pid == 0 and split != "gallery":
      misplaced.append(name)
      continue
    records.append(ImageRecord(os.path.join(folder, name), pid, cam - 1))
  checks.raise_unparsable(
      folder, bad, f"{layout.rule} with cameras 1-{layout.num_cameras}",
      layout.tree)
  if misplaced:
    raise errors.FileNameError(
        f"Distractor images (person 0) are only allowed in the gallery "
        f"(bounding_box_test/), found in {folder}: "
        f"{checks.list_names(misplaced)}")
  return records


def read_market_layout(root: str, dataset: str = "market1501") -> Benchmark:
  """Reads Market-1501 or DukeMTMC-reID as published (HR only).

  Args:
    root: the folder holding bounding_box_train/, query/, bounding_box_test/.
    dataset: 'market1501' or 'dukemtmc'.

  Returns:
    A multi-shot Benchmark named `dataset` with HR records: identities as
    written (0 = distractor, gallery only), cameras 0-based, sorted by file
    name within each split.

  Raises:
    DatasetNotFoundError, DatasetLayoutError, FileNameError, EmptySplitError,
    SplitError: see the module docstring.
  """
  layout = _layout(dataset)
  root = checks.require_root(root, layout.tree)
  checks.require_entries(root, list(SPLIT_DIRS.values()), layout.tree,
                         layout.name)
  splits = {}
  for split, sub in SPLIT_DIRS.items():
    splits[split] = tuple(_read_split(os.path.join(root, sub), split, layout))
    checks.require_nonempty(split, splits[split], dataset)
  checks.check_gallery_matches(
      ((r.pid, r.camid) for r in splits["query"]),
      ((r.pid, r.camid) for r in splits["gallery"]), dataset)
  return Benchmark(name=dataset, protocol="multi_shot", **splits)


def infer_factor(hr_size: tuple[int, int], lr_size: tuple[int, int]) -> int:
  """The down-sampling factor r in {2, 3, 4} that maps hr_size to lr_size.

  Both sides must equal floor or ceil of the HR side divided by r (tools
  differ in how they round). Anything else, or an ambiguous match, is 0:
  "unknown".

  Args:
    hr_size: (width, height) of the original.
    lr_size: (width, height) of the LR version.

  Returns:
    2, 3 or 4, or 0 when the factor cannot be told from the sizes.
  """
  matches = [
      r for r in (2, 3, 4)
      if all(lr in (math.floor(hr / r), math.ceil(hr / r))
             for hr, lr in zip(hr_size, lr_size))]
  return matches[0] if len(matches) == 1 else 0


def read_prebuilt_lr(
    lr_root: str, split: str, records: Sequence[ImageRecord],
    dataset: str = "market1501") -> dict[str, tuple[str, int]]:
  """Pairs HR records with a pre-built LR folder by file name.

  Args:
    lr_root: the pre-built MLR folder, in Market layout.
    split: 'train' or 'query': which split folder of `lr_root` to read.
    records: the HR records of that split (junk already dropped).
    dataset: 'market1501' or 'dukemtmc', for the naming rule in messages.

  Returns:
    hr_path -> (lr_path, lr_factor); the factor is inferred from the image
    sizes when it is exactly 2, 3 or 4, else 0 (unknown).

  Raises:
    DatasetNotFoundError, DatasetLayoutError: `lr_root` or the split folder
      is missing.
    LRPairingError: an HR image has no LR file, or an LR file has no HR
      original; the message names them.
  """
  layout = _layout(dataset)
  lr_root = checks.require_root(lr_root, layout.tree)
  sub = SPLIT_DIRS[split]
  checks.require_entries(lr_root, [sub], layout.tree,
                         f"pre-built MLR {layout.name}")
  folder = os.path.join(lr_root, sub)
  lr_names = set(checks.list_images(folder))
  hr_by_name = {os.path.basename(r.hr_path): r for r in records}
  # Junk (-1) files are dropped from the HR records but may well be in the LR
  # folder too; they are not "unknown".
  unknown = sorted(n for n in lr_names - set(hr_by_name)
                   if not n.startswith("-1_"))
  missing = sorted(set(hr_by_name) - lr_names)
  if unknown or missing:
    parts = []
    if missing:
      parts.append(f"{len(missing)} HR {split} image(s) have no LR file in "
                   f"{folder}: {checks.list_names(missing)}")
    if unknown:
      parts.append(f"{len(unknown)} LR file(s) in {folder} have no HR "
                   f"original: {checks.list_names(unknown)}")
    raise errors.LRPairingError("; ".join(parts))
  paired = {}
  for name, record in sorted(hr_by_name.items()):
    lr_path = os.path.join(folder, name)
    try:
      with Image.open(record.hr_path) as hr, Image.open(lr_path) as lr:
        factor = infer_factor(hr.size, lr.size)
    except OSError as e:
      raise errors.UnreadableImageError(
          f"Cannot read the size of {record.hr_path} or {lr_path}: {e}") from e
    paired[record.hr_path] = (lr_path, factor)
  return paired
