"""grain training input: P x K batches of paired HR/LR images, resumable.

Global step s is epoch s // steps_per_epoch, row s % steps_per_epoch of
`sampler.pk_epoch_plan(pids, p, k, seed, epoch)`; its augmentation comes from
Philox(SeedSequence([seed, AUGMENT_STREAM, epoch, row])) for all B global
slots, so shards and worker counts never change a batch. Images are decoded
and resized once (image_cache.py); a step only gathers, flips, pads and
crops uint8 arrays. One grain element is one whole batch (grain's worker
striding then cannot mix batches).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from typing import Any, Iterator, Optional, Sequence
import weakref

import grain
import numpy as np

from data_pipelines import records as records_lib
from data_pipelines.errors import PipelineError
from data_pipelines.pipeline import image_cache
from data_pipelines.pipeline import sampler
from data_pipelines.pipeline import transforms

# MapDataset.range needs an end; no run gets anywhere near this many steps.
_LAST_STEP = 2**62


@dataclasses.dataclass
class _TrainBatchLoader:
  """grain map function: global step -> this shard's batch."""
  images: image_cache.ImageArray
  pids: np.ndarray
  labels: np.ndarray
  p: int
  k: int
  seed: int
  steps_per_epoch: int
  with_lr: bool
  rows: slice  # this shard's rows of the global batch
  pad: int
  sampled: np.ndarray  # positions (into the records) the sampler draws from
  has_hr: np.ndarray
  plans: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

  def _plan(self, epoch: int) -> np.ndarray:
    # Steps arrive nearly in order: keep this epoch's plan and the newest
    # other one. grain calls this from several read threads; the dict is
    # replaced, never changed, so they need no lock (a plan lost to a race
    # is only recomputed: it is a pure function).
    plans = self.plans
    if epoch not in plans:
      plans = {**{e: plans[e] for e in sorted(plans)[-1:]},
               epoch: self.sampled[sampler.pk_epoch_plan(
                   self.pids[self.sampled], self.p, self.k, self.seed,
                   epoch)]}
      self.plans = plans
    return plans[epoch]

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    epoch, row = divmod(int(step), self.steps_per_epoch)
    indices = self._plan(epoch)[row]
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence(
        [self.seed, sampler.AUGMENT_STREAM, epoch, row])))
    params = transforms.sample_crop_params(rng, len(indices), pad=self.pad)
    params = transforms.CropParams(*(a[self.rows] for a in params))
    indices = indices[self.rows]
    images = self.images.array
    batch = {"hr": transforms.flip_pad_crop(images[0], indices, params,
                                            pad=self.pad)}
    if self.with_lr:
      batch["lr"] = transforms.flip_pad_crop(images[1], indices, params,
                                             pad=self.pad)
    batch["label"] = self.labels[indices]
    batch["pid"] = self.pids[indices].astype(np.int32)
    if self.with_lr:
      batch["has_hr"] = self.has_hr[indices]
    return batch


class TrainIterator:
  """Infinite iterator over P x K training batches (`make_train_iterator`).

  Attributes:
    num_classes: number of training identities M.
    records: the records the sampler draws from (with_lr=False: those with
      an HR original).
    steps_per_epoch: steps in one epoch (sampler.steps_per_epoch).
    step: the global step the next batch belongs to.
  """

  def __init__(self, loader: _TrainBatchLoader, *, num_classes: int,
               records: tuple[records_lib.ImageRecord, ...],
               steps_per_epoch: int, start_step: int, fingerprint: str,
               worker_count: int, read_options: grain.ReadOptions):
    self._loader = loader
    self.num_classes = num_classes
    self.records = records
    self.steps_per_epoch = steps_per_epoch
    self.step = start_step
    self._fingerprint = fingerprint
    self._worker_count = worker_count
    self._read_options = read_options
    self._iterator: Optional[Iterator[dict[str, np.ndarray]]] = None

  def _start(self) -> Iterator[dict[str, np.ndarray]]:
    dataset = grain.MapDataset.range(self.step, _LAST_STEP).map(self._loader)
    dataset = dataset.to_iter_dataset(self._read_options)
    if self._worker_count > 0:
      dataset = dataset.mp_prefetch(
          grain.MultiprocessingOptions(num_workers=self._worker_count))
    return iter(dataset)

  def __iter__(self) -> TrainIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      self._iterator = self._start()
    batch = next(self._iterator)
    self.step += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position: the next global step and a fingerprint."""
    return {"step": self.step, "fingerprint": self._fingerprint}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from a `get_state()` result.

    Args:
      state: a dict from `get_state()` of an iterator over the same records,
        P, K and seed (worker count and sharding may differ).

    Raises:
      PipelineError: the state belongs to different data or settings.
    """
    if state.get("fingerprint") != self._fingerprint:
      raise PipelineError(
          "iterator state does not match this pipeline (different records, "
          f"P, K or seed): {state!r}")
    self.close()
    self.step = int(state["step"])

  def close(self) -> None:
    """Stops worker processes / threads; iteration restarts lazily."""
    if self._iterator is not None and hasattr(self._iterator, "close"):
      self._iterator.close()
    self._iterator = None


def make_train_iterator(
    records: Sequence[records_lib.ImageRecord], *,
    image_size: tuple[int, int] = (256, 128), p: int = 4, k: int = 6,
    seed: int = 0, with_lr: bool = True, lr_interpolation: str = "bilinear",
    shard_index: int = 0, shard_count: int = 1, worker_count: int = 0,
    start_step: int = 0, source: Optional[Sequence[Any]] = None,
    cache_dir: Optional[str] = None, read_threads: int = 2,
    prefetch: int = 4, pad: int = transforms.PAD) -> TrainIterator:
  """Builds the P x K paired training iterator.

  It iterates forever over global steps, yielding dicts of host arrays:
  'hr', 'lr' (uint8 (B_local, H, W, 3); LR resized back to (H, W), both
  with the same flip / pad / crop), 'label' (int32, identities remapped to
  0..M-1 in sorted pid order), 'pid' (int32) and 'has_hr' (bool: False for
  a genuine LR image paired with itself, which phase 2 keeps out of L_SR
  and L_PS). 'lr' and 'has_hr' only with `with_lr`.

  Args:
    records: the training records.
    image_size: network size (H, W).
    p: identities per global batch.
    k: images per identity (sampler.py defines the epoch).
    seed: sampler and augmentation seed.
    with_lr: produce 'lr' and 'has_hr'; every record needs an lr_path.
      False (phase 1): only records with an HR original are sampled, but the
      labels still cover every identity, so both phases share M.
    lr_interpolation: 'bilinear' (released code) or 'bicubic': how LR
      images are resized to (H, W); HR images are resized bilinearly.
    shard_index: this process's index; it gets rows
      [i * B / n, (i + 1) * B / n) of each global batch of B = p * k.
    shard_count: number of processes n sharing each global batch.
    worker_count: grain worker processes (0: threads in this process).
    start_step: first global step.
    source: a random-access source aligned with `records` holding the images
      (image_cache.py), e.g. a TFDS split from tfds_builder; None: the files.
    cache_dir: where the decoded images are kept as a memory-mapped .npy,
      reused across runs (2 x 98 KB per pair at 256x128). None: in memory
      with worker_count=0, else a temporary folder removed with the
      iterator (the workers share the file).
    read_threads: grain read threads.
    prefetch: batches prepared ahead.
    pad: zero padding on each side before the random crop (SPEC: 10 at
      256x128; smaller network sizes should scale it).

  Returns:
    The iterator; `get_state()` / `set_state()` resume it at a step, with
    any worker count.

  Raises:
    PipelineError: empty records, missing LR, bad sharding, too few ids.
  """
  records = tuple(records)
  image_cache.check_records(records, with_lr, source)
  transforms.interpolation_mode(lr_interpolation)
  global_batch = p * k
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise PipelineError(f"bad shard {shard_index} of {shard_count}")
  if global_batch % shard_count:
    raise PipelineError(
        f"global batch P*K={global_batch} does not split evenly over "
        f"{shard_count} shards")
  local_batch = global_batch // shard_count
  pids = np.array([r.pid for r in records], dtype=np.int64)
  unique = np.unique(pids)
  labels = np.searchsorted(unique, pids).astype(np.int32)
  has_hr = np.array([r.has_hr_original for r in records], bool)
  sampled = np.arange(len(records)) if with_lr else np.flatnonzero(has_hr)
  if not len(sampled):
    raise PipelineError(
        "with_lr=False trains on HR images, but no record has an HR "
        f"original (all {len(records)} are genuine LR images)")
  num_steps = sampler.steps_per_epoch(pids[sampled], p, k)
  temporary_cache = None
  if cache_dir is None and worker_count > 0:
    # Workers would each receive a pickled copy of an in-memory cache; a
    # memory-mapped file is shared instead. Removed with the iterator.
    temporary_cache = cache_dir = tempfile.mkdtemp(prefix="pshrnet_images_")
  images = image_cache.build_record_images(
      records, image_size, with_lr=with_lr, lr_interpolation=lr_interpolation,
      source=source, cache_dir=cache_dir, num_threads=read_threads)
  rows = slice(shard_index * local_batch, (shard_index + 1) * local_batch)
  loader = _TrainBatchLoader(images, pids, labels, p, k, seed, num_steps,
                             with_lr, rows, pad, sampled, has_hr)
  fingerprint = image_cache.cache_key([pids[sampled].tolist(), p, k, seed] +
                                      ([pad] if pad != transforms.PAD else []))
  iterator = TrainIterator(
      loader, num_classes=len(unique),
      records=tuple(records[i] for i in sampled), steps_per_epoch=num_steps,
      start_step=start_step, fingerprint=fingerprint,
      worker_count=worker_count, read_options=grain.ReadOptions(
          num_threads=read_threads, prefetch_buffer_size=prefetch))
  if temporary_cache is not None:
    weakref.finalize(iterator, shutil.rmtree, temporary_cache, True)
  return iterator

