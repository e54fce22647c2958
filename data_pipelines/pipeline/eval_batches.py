"""grain evaluation batches: query or gallery records in fixed-size batches.

Every batch has exactly `batch_size` rows (the last one padded), so one
compiled feature function serves every batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional, Sequence

import grain
import numpy as np

from data_pipelines import records as records_lib
from data_pipelines.errors import PipelineError
from data_pipelines.pipeline import image_cache
from data_pipelines.pipeline import transforms


@dataclasses.dataclass
class _EvalBatchLoader:
  """grain map function: batch number -> a padded evaluation batch."""
  records: tuple[records_lib.ImageRecord, ...]
  image_size: tuple[int, int]
  batch_size: int
  use_lr: bool
  include_hr: bool
  lr_interpolation: str
  source: Optional[Sequence[Any]]

  def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
    size, (height, width) = self.batch_size, self.image_size
    start = int(batch_index) * size
    batch = {"image": np.zeros((size, height, width, 3), np.uint8)}
    if self.include_hr:
      batch["hr"] = np.zeros((size, height, width, 3), np.uint8)
    # Padding rows: zero images, -1 everywhere (lr_factor 0 means "unknown"
    # in records.py, so padding must not use it), valid False.
    for key in ("pid", "camid", "index", "lr_factor"):
      batch[key] = np.full((size,), -1, np.int32)
    batch["valid"] = np.zeros((size,), bool)
    for row, i in enumerate(range(start, min(start + size,
                                             len(self.records)))):
      record = self.records[i]
      with_lr = self.use_lr and record.lr_path is not None
      hr, lr = image_cache.record_images(
          self.records, i, self.source, self.image_size,
          self.lr_interpolation, hr=self.include_hr or not with_lr,
          lr=with_lr)
      batch["image"][row] = lr if with_lr else hr
      if self.include_hr:
        batch["hr"][row] = hr
      batch["pid"][row] = record.pid
      batch["camid"][row] = record.camid
      batch["index"][row] = i
      batch["lr_factor"][row] = record.lr_factor if with_lr else 1
      batch["valid"][row] = True
    return batch


@dataclasses.dataclass
class EvalBatches:
  """A re-iterable sequence of fixed-size evaluation batches."""
  loader: _EvalBatchLoader
  num_batches: int
  read_options: grain.ReadOptions

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    dataset = grain.MapDataset.range(self.num_batches).map(self.loader)
    return iter(dataset.to_iter_dataset(self.read_options))


def make_eval_batches(
    records: Sequence[records_lib.ImageRecord], *, image_size: tuple[int, int],
    batch_size: int, use_lr: bool = True, include_hr: bool = False,
    lr_interpolation: str = "bilinear", source: Optional[Sequence[Any]] = None,
    read_threads: int = 2, prefetch: int = 2) -> EvalBatches:
  """Evaluation batches in record order, the last one padded.

  Each batch is a dict:
    'image':     uint8 (B, H, W, 3): the LR version resized to (H, W)
                 (lr_interpolation) when use_lr and the record has one, else
                 the HR image (bilinear resize when not already (H, W));
    'hr':        uint8 (B, H, W, 3), the HR image (only with include_hr; for
                 SR quality);
    'pid', 'camid': int32 (B,);
    'lr_factor': int32 (B,): the record's factor when 'image' is its LR
                 version, else 1;
    'index':     int32 (B,), position in `records`;
    'valid':     bool (B,), False on the padding rows of the last batch
                 (zero images; pid, camid, index, lr_factor -1).

  Args:
    records: the query or gallery records.
    image_size: network size (H, W).
    batch_size: rows per batch.
    use_lr: feed LR versions where they exist.
    include_hr: also return the HR images.
    lr_interpolation: 'bilinear' or 'bicubic'.
    source: random-access image source aligned with records (see
      make_train_iterator), or None to read the files.
    read_threads: grain read threads.
    prefetch: batches decoded ahead.

  Returns:
    An iterable with len() = ceil(len(records) / batch_size); each iteration
    decodes the images anew.

  Raises:
    PipelineError: empty records, bad batch size or misaligned source.
  """
  records = tuple(records)
  image_cache.check_records(records, False, source)
  transforms.interpolation_mode(lr_interpolation)
  if batch_size < 1:
    raise PipelineError(f"batch_size must be >= 1, got {batch_size}")
  loader = _EvalBatchLoader(records, tuple(image_size), batch_size, use_lr,
                            include_hr, lr_interpolation, source)
  num_batches = -(-len(records) // batch_size)
  return EvalBatches(loader, num_batches, grain.ReadOptions(
      num_threads=read_threads, prefetch_buffer_size=prefetch))
