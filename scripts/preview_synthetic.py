"""Writes a contact sheet of the synthetic demo set so a person can look at it.

One row per identity, its images grouped by camera (a gap between cameras),
labelled with the pid and the camera ids:

  python scripts/preview_synthetic.py --out_png=/tmp/synthetic.png

The set is generated into --data_dir (or reused from there) with the default
`generate_demo` arguments and --seed.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import tempfile

from absl import app
from absl import flags
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_pipelines.builders import synthetic  # pylint: disable=g-import-not-at-top

_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.path.join(tempfile.gettempdir(), "pshrnet_synthetic_demo"),
    "Where the demo set is generated or reused.")
_OUT_PNG = flags.DEFINE_string("out_png", "synthetic_preview.png",
                               "The contact sheet to write.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the demo set.")
_NUM_IDS = flags.DEFINE_integer("num_ids", 8, "Identities (rows) to show.")
_SPLIT = flags.DEFINE_enum("split", "bounding_box_train", synthetic.SPLIT_DIRS,
                           "Which split's identities to show.")

_NAME = re.compile(r"^(\d{4})_c(\d)s\d_\d{6}_\d{2}\.jpg$")


def contact_sheet(root: str, split: str, num_ids: int) -> Image.Image:
  """Lays out the first `num_ids` identities of root/split, camera by camera.

  Args:
    root: a Market-1501-style folder (as written by `generate_demo`).
    split: the sub-folder to read, e.g. "bounding_box_train".
    num_ids: how many identities (rows) to show, lowest pids first.

  Returns:
    The sheet as an RGB image.
  """
  by_pid = collections.defaultdict(lambda: collections.defaultdict(list))
  for name in sorted(os.listdir(os.path.join(root, split))):
    match = _NAME.match(name)
    if match is None:
      raise ValueError(f"{os.path.join(root, split, name)}: not a Market-1501 "
                       "name PPPP_cCsS_FFFFFF_BB.jpg")
    by_pid[int(match[1])][int(match[2])].append(name)
  pids = sorted(by_pid)[:num_ids]
  if not pids:
    raise ValueError(f"{os.path.join(root, split)} holds no images")
  first = Image.open(os.path.join(root, split, by_pid[pids[0]][
      min(by_pid[pids[0]])][0]))
  width, height = first.size
  cams = sorted({c for p in pids for c in by_pid[p]})
  per_cam = max(len(by_pid[p][c]) for p in pids for c in by_pid[p])
  label_w, gap, header = 44, 8, 16
  sheet_w = label_w + len(cams) * (per_cam * width + gap)
  sheet = Image.new("RGB", (sheet_w, header + len(pids) * (height + 2)),
                    (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for k, cam in enumerate(cams):
    draw.text((label_w + k * (per_cam * width + gap), 2), f"camera {cam}",
              fill=(0, 0, 0))
  for row, pid in enumerate(pids):
    y = header + row * (height + 2)
    draw.text((4, y + height // 2 - 5), f"{pid:04d}", fill=(0, 0, 0))
    for k, cam in enumerate(cams):
      for i, name in enumerate(by_pid[pid].get(cam, [])):
        x = label_w + k * (per_cam * width + gap) + i * width
        sheet.paste(Image.open(os.path.join(root, split, name)), (x, y))
  return sheet


def main(argv: list[str]) -> None:
  del argv
  root = synthetic.generate_demo(_DATA_DIR.value, _SEED.value)
  sheet = contact_sheet(root, _SPLIT.value, _NUM_IDS.value)
  sheet.save(_OUT_PNG.value)
  print(f"set: {root}\nwrote {_OUT_PNG.value} ({sheet.size[0]}x"
        f"{sheet.size[1]})")


if __name__ == "__main__":
  app.run(main)
