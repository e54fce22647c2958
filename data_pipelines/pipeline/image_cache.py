"""Decode and resize every image once, into a uint8 cache the pipelines slice.

Decoding and resizing cost far more than the augmentation and are
deterministic, so `build_record_images` does them once per record into an
(A, N, H, W, 3) uint8 `ImageArray`, in memory or in a memory-mapped .npy file
named by a hash of everything that determines its content (a later run
reuses it). Images come from the records' files or from a random-access
`source` aligned with the records (item i = record i, e.g. a TFDS split from
tfds_builder): items with 'hr' and 'lr' (a list of 0 or 1 images), each
encoded bytes or a decoded uint8 array.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import tempfile
from typing import Any, Callable, Optional, Sequence

import numpy as np

from data_pipelines import errors
from data_pipelines import records as records_lib
from data_pipelines.errors import PipelineError
from data_pipelines.pipeline import transforms


class ImageArray:
  """uint8 (A, N, H, W, 3) images, in memory or memory-mapped from a .npy file.

  `array[a]` is the a-th kind of image (e.g. HR, LR) of all N records. A
  file-backed array pickles as its path, so grain worker processes re-open
  the file instead of receiving a copy of the data.
  """

  def __init__(self, array: np.ndarray, path: Optional[str] = None):
    self.array = array
    self.path = path

  def __getstate__(self) -> dict[str, Any]:
    return ({"array": self.array, "path": None} if self.path is None
            else {"path": self.path})

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.path = state["path"]
    self.array = (state["array"] if self.path is None
                  else np.load(self.path, mmap_mode="r"))


def cache_key(parts: Sequence[Any]) -> str:
  """A short stable hash of the given values (their repr)."""
  digest = hashlib.sha256()
  for part in parts:
    digest.update(repr(part).encode())
    digest.update(b"\0")
  return digest.hexdigest()[:20]


def file_fingerprint(path: str) -> tuple[str, int, int]:
  """(path, size, mtime_ns): changes when the file is rewritten."""
  try:
    stat = os.stat(path)
  except FileNotFoundError:
    raise errors.DatasetNotFoundError(f"image file not found: {path}") from None
  return (path, stat.st_size, stat.st_mtime_ns)


def _build_image_array(load: Callable[[int], Sequence[np.ndarray]],
                       shape: tuple[int, ...], cache_file: Optional[str],
                       num_threads: int) -> ImageArray:
  """Stacks `load(i)` (A images) for every record i into `shape`.

  An existing `cache_file` of the right shape is reused without decoding.
  PIL releases the GIL while decoding, so threads help.
  """
  if cache_file is not None and os.path.exists(cache_file):
    array = np.load(cache_file, mmap_mode="r")
    if array.shape == shape and array.dtype == np.uint8:
      return ImageArray(array, cache_file)
  tmp_path = None
  if cache_file is not None:
    cache_dir = os.path.dirname(os.path.abspath(cache_file))
    os.makedirs(cache_dir, exist_ok=True)
    # Write under a temporary name and rename, so a concurrent or killed
    # writer never leaves a half-written cache that a reader would trust.
    fd, tmp_path = tempfile.mkstemp(suffix=".npy.tmp", dir=cache_dir)
    os.close(fd)
    out = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8,
                                    shape=shape)
  else:
    out = np.empty(shape, np.uint8)

  def fill(i: int, out: np.ndarray = out) -> None:
    for a, image in enumerate(load(i)):
      out[a, i] = image

  try:
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
      list(pool.map(fill, range(shape[1])))
  except BaseException:
    if tmp_path is not None:
      out = None  # Drop the memory map before removing its file.
      os.remove(tmp_path)
    raise
  if tmp_path is None:
    return ImageArray(out)
  out.flush()
  del out
  os.replace(tmp_path, cache_file)
  return ImageArray(np.load(cache_file, mmap_mode="r"), cache_file)


def _source_images(item: Any, index: int, record: records_lib.ImageRecord,
                   with_lr: bool) -> tuple[Any, Any]:
  """(hr, lr) of a source item; lr is None without with_lr.

  Items carrying 'index' / 'file_name' (tfds_builder's) are checked against
  the record, so a source of another split or order fails loudly.
  """
  try:
    hr = item["hr"]
    lr = item.get("lr") if with_lr else None
  except (TypeError, KeyError) as e:
    raise PipelineError(f"source item {index} has no 'hr' image: {e}") from e
  file_name = item.get("file_name")
  if isinstance(file_name, bytes):
    file_name = file_name.decode()
  if (("index" in item and int(item["index"]) != index) or
      (file_name is not None and
       file_name != os.path.basename(record.hr_path))):
    raise PipelineError(
        f"source item {index} (index {item.get('index')}, {file_name}) is not "
        f"aligned with record {index} ({record.hr_path}): same split, same "
        "order?")
  if with_lr:
    if isinstance(lr, (list, tuple)):
      lr = lr[0] if lr else None
    elif isinstance(lr, np.ndarray) and lr.ndim == 4:
      lr = lr[0] if len(lr) else None
    if lr is None:
      raise PipelineError(
          f"source item {index} ({record.hr_path}) has no LR image")
  return hr, lr


def record_images(records: Sequence[records_lib.ImageRecord], index: int,
                  source: Optional[Sequence[Any]],
                  image_size: tuple[int, int], lr_interpolation: str, *,
                  hr: bool, lr: bool
                  ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
  """Record `index`'s (HR, LR) uint8 images at `image_size`, None if not asked.

  Images come from `source` (item i holds record i's) or, without one, from
  the files. HR is resized bilinearly (torchvision's Resize default), LR
  with `lr_interpolation`.
  """
  record = records[index]
  if source is None:
    hr_source, lr_source = record.hr_path, record.lr_path
  else:
    hr_source, lr_source = _source_images(source[index], index, record, lr)
  name = os.path.basename(record.hr_path)
  return (transforms.load_resized(hr_source, image_size, "bilinear",
                                  what=f"HR image of {name}") if hr else None,
          transforms.load_resized(lr_source, image_size, lr_interpolation,
                                  what=f"LR image of {name}") if lr else None)


def check_records(records: Sequence[records_lib.ImageRecord], with_lr: bool,
                  source: Optional[Sequence[Any]]) -> None:
  """PipelineError for an empty split, a record without the LR version
  `with_lr` needs (naming its file) or a source of another length."""
  if not records:
    raise PipelineError("no records: the split is empty")
  if with_lr:
    for record in records:
      if record.lr_path is None:
        raise PipelineError(
            f"with_lr=True but {record.hr_path} has no LR version (lr_path is "
            "None); build the MLR set or pass with_lr=False")
  if source is not None and len(source) != len(records):
    raise PipelineError(
        f"source has {len(source)} items but there are {len(records)} records")


def build_record_images(records: Sequence[records_lib.ImageRecord],
                        image_size: tuple[int, int], *, with_lr: bool,
                        lr_interpolation: str = "bilinear",
                        source: Optional[Sequence[Any]] = None,
                        cache_dir: Optional[str] = None,
                        num_threads: int = 2) -> ImageArray:
  """The records' HR (and LR) images at the network size, decoded once.

  Args:
    records: the records.
    image_size: network size (H, W).
    with_lr: also build the LR images (array[1]).
    lr_interpolation: 'bilinear' or 'bicubic' for the LR images.
    source: item i holds record i's images; None: read the files.
    cache_dir: keep the array as a memory-mapped .npy here, named by a hash
      of the files (path, size, mtime) or the records (with a source), the
      size, with_lr and the interpolation; reused when it exists. None: in
      memory.
    num_threads: decoding threads.

  Returns:
    An `ImageArray` of shape (1 or 2, len(records), H, W, 3).
  """
  cache_file = None
  if cache_dir is not None:
    if source is None:
      files = [(file_fingerprint(r.hr_path),
                file_fingerprint(r.lr_path) if with_lr else None)
               for r in records]
    else:
      files = ("source", tuple(records))
    key = cache_key([files, tuple(image_size), with_lr, lr_interpolation])
    cache_file = os.path.join(cache_dir, f"images_{key}.npy")
  image_size, kinds = tuple(image_size), 2 if with_lr else 1

  def load(i: int) -> tuple[np.ndarray, ...]:
    return record_images(records, i, source, image_size, lr_interpolation,
                         hr=True, lr=with_lr)[:kinds]

  return _build_image_array(load, (kinds, len(records), *image_size, 3),
                            cache_file, num_threads)
