r"""Throughput of the P x K paired training pipeline (augmented HR/LR pairs/s).

Builds a synthetic set of random-content JPEG files of realistic size (HR
128x64 as in Market-1501's originals, LR down-sampled by 2-4 as the MLR sets)
in a temporary folder, then times `pipeline.make_train_iterator` producing
256x128 P x K batches with 0 and with N grain workers. The one-off cache build
(decode + resize of every image) is timed separately.

  python scripts/benchmark_data.py                       # 1000 pairs, 2 workers
  python scripts/benchmark_data.py --num_images=5000 --workers=4 --steps=400
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from data_pipelines.records import ImageRecord
from scripts import input_timing

_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "HR/LR pairs in the set.")
_NUM_IDS = flags.DEFINE_integer("num_ids", 100, "identities in the set.")
_STEPS = flags.DEFINE_integer("steps", 200, "timed steps per configuration.")
_WORKERS = flags.DEFINE_integer("workers", 2, "grain workers for the N case.")
_P = flags.DEFINE_integer("p", 4, "identities per batch.")
_K = flags.DEFINE_integer("k", 6, "pairs per identity.")
_CACHE = flags.DEFINE_enum(
    "cache", "disk", ["disk", "memory"],
    "where the resized images live: a memory-mapped .npy in the temp folder "
    "(built once, reused by the second configuration), or in memory (with "
    "workers the pipeline then uses its own temporary memory-mapped file).")
_HR_SIZE = (128, 64)  # (H, W) of the HR originals
_IMAGE_SIZE = (256, 128)


def _write_set(folder: str, count: int, num_ids: int) -> list[ImageRecord]:
  """Random-content JPEGs: HR 128x64 and LR down-sampled by 2, 3 or 4."""
  rng = np.random.default_rng(0)
  records = []
  for i in range(count):
    # Smooth random content (noise blurred by up-sampling) compresses like a
    # photo; pure noise would make JPEG decode unrealistically slow.
    coarse = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    hr = Image.fromarray(coarse).resize(_HR_SIZE[::-1], Image.Resampling.BICUBIC)
    factor = int(rng.integers(2, 5))
    lr = hr.resize((_HR_SIZE[1] // factor, _HR_SIZE[0] // factor),
                   Image.Resampling.BICUBIC)
    hr_path = os.path.join(folder, f"{i:05d}.jpg")
    lr_path = os.path.join(folder, f"{i:05d}_lr.jpg")
    hr.save(hr_path, quality=90)
    lr.save(lr_path, quality=90)
    records.append(ImageRecord(hr_path, i % num_ids, i % 6, lr_path, factor))
  return records


def _time(records, workers: int, steps: int, cache_dir) -> tuple[float, float]:
  """(seconds to build the iterator, pairs/s over `steps` steps)."""
  return input_timing.time_train_iterator(
      records, workers=workers, steps=steps, image_size=_IMAGE_SIZE,
      p=_P.value, k=_K.value, cache_dir=cache_dir)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    records = _write_set(folder, _NUM_IMAGES.value, _NUM_IDS.value)
    print(f"wrote {len(records)} HR {_HR_SIZE[0]}x{_HR_SIZE[1]} + LR JPEG pairs "
          f"in {time.perf_counter() - start:.1f} s")
    cache_dir = os.path.join(folder, "cache") if _CACHE.value == "disk" else None
    os.sync()  # do not time the write-back of the JPEGs just written
    print(f"cpu cores: {os.cpu_count()}, network size {_IMAGE_SIZE}, "
          f"P x K = {_P.value} x {_K.value}, cache: {_CACHE.value}, "
          f"{_STEPS.value} timed steps")
    for workers in (0, _WORKERS.value):
      build, rate = _time(records, workers, _STEPS.value, cache_dir)
      print(f"workers={workers}: setup {build:.2f} s (decode + resize of every "
            f"image, or reuse of the disk cache), {rate:,.0f} augmented "
            "256x128 HR/LR pairs/s")


if __name__ == "__main__":
  app.run(main)
