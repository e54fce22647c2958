"""Readers for Market-1501 and DukeMTMC-reID, and pre-built MLR folders.

`root` is the folder holding the three split folders (README.md shows the
trees). Names: Market `PPPP_cCsS_FFFFFF_BB.jpg`, Duke `PPPP_cC_fFFFFFFF.jpg`
(`.png`/`.bmp` accepted for re-encoded copies): person PPPP, camera C (Market
1-6, Duke 1-8, stored 0-based). Person -1 is junk (dropped, as torchreid
does); person 0 marks distractors, kept in the gallery and an error anywhere
else. Pre-built MLR folders (MLR-Market / MLR-Duke as distributed) use the
same layout with LR images under the same names (`read_prebuilt_lr`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

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


class _Layout(NamedTuple):
  """How one dataset names its files."""
  name: str
  pattern: re.Pattern
  rule: str
  num_cameras: int
  tree: str


LAYOUTS = {
    "market1501": _Layout(
        "Market-1501", re.compile(r"^(-1|\d+)_c(\d)s\d+_\d+_\d+" + _EXT, re.I),
        "PPPP_cCsS_FFFFFF_BB.jpg", 6, MARKET_TREE),
    "dukemtmc": _Layout(
        "DukeMTMC-reID", re.compile(r"^(-1|\d+)_c(\d)_f\d+" + _EXT, re.I),
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
    if not match or not 1 <= int(match.group(2)) <= layout.num_cameras:
      bad.append(name)
      continue
    pid, cam = int(match.group(1)), int(match.group(2))
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
    DatasetError: a missing root or split folder, a bad file name, an empty
      split, a query identity without a gallery match.
  """
  layout = _layout(dataset)
  root = checks.require_root(root, layout.tree, layout.name,
                             list(SPLIT_DIRS.values()))
  splits = {}
  for split, sub in SPLIT_DIRS.items():
    splits[split] = tuple(_read_split(os.path.join(root, sub), split, layout))
    checks.require_nonempty(split, splits[split], dataset)
  checks.check_gallery_matches(splits["query"], splits["gallery"], dataset)
  return Benchmark(name=dataset, protocol="multi_shot", **splits)


def infer_factor(hr_size: tuple[int, int], lr_size: tuple[int, int]) -> int:
  """The factor r in {2, 3, 4} mapping hr_size to lr_size, else 0 (unknown).

  Both sides must equal floor or ceil of the HR side over r (tools round
  differently); no match or an ambiguous one gives 0.
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
    LRPairingError: naming HR images without an LR file and LR files
      without an HR original.
  """
  layout = _layout(dataset)
  lr_root = checks.require_root(lr_root, layout.tree,
                                f"pre-built MLR {layout.name}",
                                [SPLIT_DIRS[split]])
  folder = os.path.join(lr_root, SPLIT_DIRS[split])
  lr_names = set(checks.list_images(folder))
  hr_by_name = {os.path.basename(r.hr_path): r for r in records}
  # Junk (-1) files are dropped from the HR records but may well be in the LR
  # folder too; they are not "unknown".
  unknown = sorted(n for n in lr_names - set(hr_by_name)
                   if not n.startswith("-1_"))
  missing = sorted(set(hr_by_name) - lr_names)
  parts = []
  if missing:
    parts.append(f"{len(missing)} HR {split} image(s) have no LR file in "
                 f"{folder}: {checks.list_names(missing)}")
  if unknown:
    parts.append(f"{len(unknown)} LR file(s) in {folder} have no HR "
                 f"original: {checks.list_names(unknown)}")
  if parts:
    raise errors.LRPairingError("; ".join(parts))
  paired = {}
  for name, record in sorted(hr_by_name.items()):
    lr_path = os.path.join(folder, name)
    try:
      with Image.open(record.hr_path) as hr, Image.open(lr_path) as lr:
        factor = infer_factor(hr.size, lr.size)
    except errors.IMAGE_DECODE_ERRORS as e:
      raise errors.UnreadableImageError(
          f"Cannot read the size of {record.hr_path} or {lr_path}: {e}") from e
    paired[record.hr_path] = (lr_path, factor)
  return paired
