"""grain pipelines: paired augmentation, determinism, resume, sharding, eval."""

import gc
import json
import os
import pickle
import tempfile

import numpy as np
from PIL import Image
import pytest

from pshrnet_jax import errors
from data_pipelines.pipeline import image_cache
from data_pipelines import pipeline
from data_pipelines.pipeline import sampler
from data_pipelines.pipeline import transforms
from data_pipelines.records import ImageRecord

_SIZE = (32, 16)  # network size (H, W) in these tests
_PAD = transforms.PAD
# 7 identities with 1..9 images; pids deliberately unsorted and sparse.
_IDS = {40: 9, 3: 5, 17: 1, 25: 4, 8: 6, 31: 2, 12: 7}
# P = 2, K = 3: groups 3 + 1 + 1 + 1 + 2 + 1 + 2 = 11 -> 11 // 2 steps.
_STEPS = 5


def _save(path, array):
  Image.fromarray(array).save(path)
  return path


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  """HR images at 16x8 (resized up to 32x16) and LR at 8x4, random PNGs."""
  folder = tmp_path_factory.mktemp("pairs")
  rng = np.random.default_rng(0)
  out = []
  for pid, count in _IDS.items():
    for j in range(count):
      hr = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
      lr = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
      out.append(ImageRecord(
          _save(str(folder / f"{pid:04d}_{j}.png"), hr), pid, j % 2,
          _save(str(folder / f"{pid:04d}_{j}_lr.png"), lr), 2 + j % 3))
  return tuple(out)


def _reference(path, interpolation):
  """Straightforward reference for decode + resize: PIL directly."""
  mode = {"bilinear": Image.Resampling.BILINEAR,
          "bicubic": Image.Resampling.BICUBIC}[interpolation]
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB").resize(_SIZE[::-1], mode))


def _augment(image, flip, top, left):
  """Reference augmentation: flip, np.pad by 10, crop."""
  if flip:
    image = image[:, ::-1]
  padded = np.pad(image, ((_PAD, _PAD), (_PAD, _PAD), (0, 0)))
  return padded[top:top + _SIZE[0], left:left + _SIZE[1]]


def _find_params(source, augmented):
  """All (flip, top, left) that turn source into augmented."""
  return [(f, t, l) for f in (False, True) for t in range(2 * _PAD + 1)
          for l in range(2 * _PAD + 1)
          if np.array_equal(_augment(source, f, t, l), augmented)]


def _batches(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference_run(records):
  """Steps 0..9 (two epochs) of the iterator with P=2, K=3, seed 5."""
  iterator = pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                          seed=5)
  return iterator, _batches(iterator, 10)


def test_batches_follow_the_plan_with_remapped_labels(records, reference_run):
  iterator, batches = reference_run
  pids = np.array([r.pid for r in records])
  assert iterator.num_classes == 7
  assert iterator.steps_per_epoch == sampler.steps_per_epoch(pids, 2, 3) == _STEPS
  sorted_ids = sorted(_IDS)
  for step, batch in enumerate(batches):
    epoch, row = divmod(step, _STEPS)
    plan = sampler.pk_epoch_plan(pids, 2, 3, 5, epoch)[row]
    np.testing.assert_array_equal(batch["pid"], pids[plan])
    np.testing.assert_array_equal(
        batch["label"], [sorted_ids.index(p) for p in pids[plan]])
    assert batch["hr"].shape == batch["lr"].shape == (6, *_SIZE, 3)
    assert batch["hr"].dtype == batch["lr"].dtype == np.uint8
    assert batch["label"].dtype == np.int32


def test_hr_and_lr_get_the_same_flip_pad_crop(records, reference_run):
  """Recover each example's (flip, top, left) from its HR output by brute
  force against the reference, then check the LR output used the same."""
  _, batches = reference_run
  pids = np.array([r.pid for r in records])
  seen_flips = set()
  for step in (0, 7):
    epoch, row = divmod(step, _STEPS)
    plan = sampler.pk_epoch_plan(pids, 2, 3, 5, epoch)[row]
    for b, index in enumerate(plan):
      hr = _reference(records[index].hr_path, "bilinear")
      lr = _reference(records[index].lr_path, "bilinear")
      params = _find_params(hr, batches[step]["hr"][b])
      assert len(params) == 1, params
      np.testing.assert_array_equal(batches[step]["lr"][b], _augment(lr, *params[0]))
      seen_flips.add(params[0][0])
  assert seen_flips == {False, True}


def test_bicubic_lr_option(records):
  iterator = pipeline.make_train_iterator(
      records, image_size=_SIZE, p=2, k=3, seed=5, lr_interpolation="bicubic")
  batch = next(iterator)
  pids = np.array([r.pid for r in records])
  index = sampler.pk_epoch_plan(pids, 2, 3, 5, 0)[0][0]
  hr = _reference(records[index].hr_path, "bilinear")
  (params,) = _find_params(hr, batch["hr"][0])
  lr = _reference(records[index].lr_path, "bicubic")
  np.testing.assert_array_equal(batch["lr"][0], _augment(lr, *params))
  assert not np.array_equal(
      lr, _reference(records[index].lr_path, "bilinear"))


def test_worker_processes_give_identical_batches(records, reference_run,
                                                tmp_path, monkeypatch):
  _, expected = reference_run
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  iterator = pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                          seed=5, worker_count=2)
  try:
    _assert_same(_batches(iterator, 10), expected)
  finally:
    iterator.close()
  # Workers share a memory-mapped cache in a temporary folder, removed with
  # the iterator.
  (folder,) = os.listdir(tmp_path)
  (cache_file,) = os.listdir(tmp_path / folder)
  assert folder.startswith("pshrnet_images_") and cache_file.endswith(".npy")
  del iterator
  gc.collect()
  assert not os.listdir(tmp_path)


def test_resume_from_json_state(records, reference_run):
  _, expected = reference_run
  first = pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                       seed=5)
  _batches(first, 4)
  state = json.loads(json.dumps(first.get_state()))
  assert state["step"] == 4
  resumed = pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                         seed=5)
  next(resumed)  # a fresh run that already moved on, then restores
  resumed.set_state(state)
  _assert_same(_batches(resumed, 6), expected[4:])
  started = pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                         seed=5, start_step=7)
  _assert_same(_batches(started, 3), expected[7:])
  other_seed = pipeline.make_train_iterator(records, image_size=_SIZE, p=2,
                                            k=3, seed=6)
  with pytest.raises(errors.PipelineError, match="does not match"):
    other_seed.set_state(state)


@pytest.mark.parametrize("shard_count", [2, 3])
def test_shards_split_the_global_batch_exactly(records, reference_run,
                                               shard_count):
  _, expected = reference_run
  shards = [pipeline.make_train_iterator(
      records, image_size=_SIZE, p=2, k=3, seed=5, shard_index=i,
      shard_count=shard_count) for i in range(shard_count)]
  for step in range(3):
    parts = [next(s) for s in shards]
    assert all(len(part["hr"]) == 6 // shard_count for part in parts)
    for key, value in expected[step].items():
      np.testing.assert_array_equal(
          np.concatenate([part[key] for part in parts]), value)
  with pytest.raises(errors.PipelineError, match="does not split evenly"):
    pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                 shard_count=4)


def test_hr_only_mode_and_missing_lr(records, reference_run):
  _, expected = reference_run
  hr_only = [r._replace(lr_path=None, lr_factor=1) for r in records]
  iterator = pipeline.make_train_iterator(hr_only, image_size=_SIZE, p=2, k=3,
                                          seed=5, with_lr=False)
  batch = next(iterator)
  assert set(batch) == {"hr", "label", "pid"}
  # the LR stream does not change the HR images
  np.testing.assert_array_equal(batch["hr"], expected[0]["hr"])
  with pytest.raises(errors.PipelineError, match=r"0040_0\.png has no LR"):
    pipeline.make_train_iterator(hr_only, image_size=_SIZE, p=2, k=3)


def test_disk_cache_is_reused_and_pickles_as_a_path(records, reference_run,
                                                    tmp_path, monkeypatch):
  _, expected = reference_run
  iterator = pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                          seed=5, cache_dir=str(tmp_path))
  (cache_file,) = os.listdir(tmp_path)
  assert cache_file.startswith("images_") and cache_file.endswith(".npy")
  _assert_same(_batches(iterator, 2), expected[:2])

  def no_decoding(*args, **kwargs):
    raise AssertionError("the cache should have been reused")

  monkeypatch.setattr(image_cache.transforms, "load_resized", no_decoding)
  again = pipeline.make_train_iterator(records, image_size=_SIZE, p=2, k=3,
                                       seed=5, cache_dir=str(tmp_path))
  _assert_same(_batches(again, 2), expected[:2])
  # A file-backed image array reaches grain's workers as its path.
  images = image_cache.build_record_images(records, _SIZE, with_lr=True,
                                           cache_dir=str(tmp_path))
  assert images.path == str(tmp_path / cache_file)
  pickled = pickle.dumps(images)
  assert len(pickled) < 1000
  np.testing.assert_array_equal(pickle.loads(pickled).array, images.array)


def test_unreadable_and_missing_images_are_named(records, tmp_path):
  bad = tmp_path / "0099_0.png"
  bad.write_bytes(b"not an image")
  broken = records + (ImageRecord(str(bad), 99, 0, records[0].lr_path, 2),)
  with pytest.raises(errors.UnreadableImageError, match="0099_0.png"):
    pipeline.make_train_iterator(broken, image_size=_SIZE, p=2, k=3)
  missing = records + (ImageRecord(str(tmp_path / "gone.png"), 99, 0,
                                   records[0].lr_path, 2),)
  with pytest.raises(FileNotFoundError, match="gone.png"):
    pipeline.make_train_iterator(missing, image_size=_SIZE, p=2, k=3)
  with pytest.raises(errors.PipelineError, match="empty"):
    pipeline.make_train_iterator([], image_size=_SIZE)


def test_eval_batches_are_padded_and_masked(records):
  # 10 records: 6 with an LR version, 4 HR-only (a gallery-like tail).
  chosen = list(records[:6]) + [r._replace(lr_path=None, lr_factor=1)
                                for r in records[6:10]]
  batches = pipeline.make_eval_batches(chosen, image_size=_SIZE, batch_size=4,
                                       include_hr=True)
  assert len(batches) == 3
  out = list(batches)
  assert len(out) == 3
  valid = np.concatenate([b["valid"] for b in out])
  np.testing.assert_array_equal(valid, [True] * 10 + [False] * 2)
  index = np.concatenate([b["index"] for b in out])
  np.testing.assert_array_equal(index, list(range(10)) + [-1, -1])
  for i, record in enumerate(chosen):
    batch, row = out[i // 4], i % 4
    expected = _reference(record.input_path,
                          "bilinear")
    np.testing.assert_array_equal(batch["image"][row], expected)
    np.testing.assert_array_equal(batch["hr"][row],
                                  _reference(record.hr_path, "bilinear"))
    assert batch["pid"][row] == record.pid
    assert batch["camid"][row] == record.camid
    assert batch["lr_factor"][row] == record.lr_factor
  assert not out[2]["image"][2:].any() and not out[2]["hr"][2:].any()
  for key in ("pid", "camid", "lr_factor"):
    np.testing.assert_array_equal(out[2][key][2:], [-1, -1])
  # use_lr=False feeds the HR image even where an LR version exists
  hr_batches = list(pipeline.make_eval_batches(
      chosen[:2], image_size=_SIZE, batch_size=2, use_lr=False))
  np.testing.assert_array_equal(hr_batches[0]["image"][0],
                                _reference(chosen[0].hr_path, "bilinear"))
  np.testing.assert_array_equal(hr_batches[0]["lr_factor"], [1, 1])
  assert "hr" not in hr_batches[0]


def test_flip_pad_crop_matches_np_pad_reference():
  """Every (flip, top, left), also on an image smaller than the padding."""
  rng = np.random.default_rng(3)
  for height, width in ((4, 3), (32, 16)):
    images = rng.integers(1, 256, (2, height, width, 3), dtype=np.uint8)
    grid = [(f, t, l) for f in (False, True) for t in range(2 * _PAD + 1)
            for l in range(2 * _PAD + 1)]
    params = transforms.CropParams(*map(np.array, zip(*grid)))
    out = transforms.flip_pad_crop(images, [1] * len(grid), params)
    for b, (f, t, l) in enumerate(grid):
      image = images[1][:, ::-1] if f else images[1]
      padded = np.pad(image, ((_PAD, _PAD), (_PAD, _PAD), (0, 0)))
      np.testing.assert_array_equal(out[b], padded[t:t + height, l:l + width])
