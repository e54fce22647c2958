"""The seeded MLR builder: LR versions of HR originals, with a manifest.

The down-sampling factor of an image is a pure function of (seed, its path
relative to the dataset root), so it never depends on which other images
exist or on the split:

    r = factors[int(sha256(f"{seed}/{relative_path}")) % len(factors)]

The LR image is PIL bicubic (antialiased) at (ceil(W/r), ceil(H/r)), MATLAB
`imresize(img, 1/r)`'s output size that the original recipe used, saved as
lossless PNG. A build lives in `<build_dir>/<build_name>/`:

    manifest.json        the key (dataset, seed, options, factors, builder
                         version), the split identity lists, image -> factor,
                         sha256 of every file
    lr/<relative path of the HR image, ending .png>

It is written atomically; a finished build with the same key is reused, one
with another key is an error, never overwritten. Nothing is written inside
the user's dataset folders.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from absl import logging
from PIL import Image

from data_pipelines import atomic
from data_pipelines import errors
from data_pipelines.readers import checks
from data_pipelines.records import Benchmark
from data_pipelines.records import QUERY_IMAGE_ONLY

BUILDER_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_FACTORS = (2, 3, 4)
SPLITS = ("train", "query", "gallery")


@dataclasses.dataclass(frozen=True)
class BuiltBenchmark:
  """A benchmark together with the build folder and manifest it came from."""
  benchmark: Benchmark
  path: str
  manifest: dict[str, Any]


def draw_factor(seed: int, relative_path: str,
                factors: Sequence[int] = DEFAULT_FACTORS) -> int:
  """The factor of an image (its path relative to the dataset root, '/'
  separators): one of `factors`, uniformly distributed over images."""
  digest = hashlib.sha256(f"{seed}/{relative_path}".encode()).digest()
  return factors[int.from_bytes(digest, "big") % len(factors)]


def lr_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
  """(width, height) of the LR version: ceil of each side over the factor."""
  return tuple(max(1, math.ceil(s / factor)) for s in size)


def downsample(image: Image.Image, factor: int) -> Image.Image:
  """Bicubic down-sampling of an RGB image by `factor` (see module doc)."""
  return image.resize(lr_size(image.size, factor), Image.Resampling.BICUBIC)


def _relative(path: str, root: str) -> str:
  rel = os.path.relpath(path, root)
  if rel.startswith(".."):
    raise ValueError(f"{path} is not inside the dataset root {root}")
  return rel.replace(os.sep, "/")


def _process(item, tmp: str) -> tuple[Optional[str], Optional[str]]:
  """Decodes a planned HR image and writes its LR version (if any) in `tmp`.

  Returns:
    (error message or None, sha256 of the written LR file or None).
  """
  record, _, lr_rel, factor = item
  try:
    with Image.open(record.hr_path) as image:
      image = image.convert("RGB")
  except errors.IMAGE_DECODE_ERRORS as e:
    return f"{record.hr_path}: {e}", None
  if lr_rel is None:
    return None, None
  buffer = io.BytesIO()
  downsample(image, factor).save(buffer, format="PNG")
  data = buffer.getvalue()
  lr_abs = os.path.join(tmp, lr_rel)
  os.makedirs(os.path.dirname(lr_abs), exist_ok=True)
  with open(lr_abs, "wb") as f:
    f.write(data)
  return None, hashlib.sha256(data).hexdigest()


def _plan(source: Benchmark, source_root: str, seed: int,
          lr_splits: Sequence[str], factors: Sequence[int]):
  """What each record becomes: {split: [(record, hr_rel, lr_rel|None, r)]}."""
  plan = {split: [] for split in SPLITS}
  for split in SPLITS:
    for record in getattr(source, split):
      rel = _relative(record.hr_path, source_root)
      if split in lr_splits and record.lr_path is None:
        plan[split].append((record, rel, "lr/" + os.path.splitext(rel)[0]
                            + ".png", draw_factor(seed, rel, factors)))
      else:
        plan[split].append((record, rel, None, record.lr_factor))
  return plan


def _finish(source: Benchmark, plan, build_path: str, source_root: str,
            skipped: set[str]) -> tuple[Benchmark, dict[str, Any]]:
  """The final records and the manifest's data part, `skipped` removed."""
  splits, images, identities = {}, {}, {}
  for split, items in plan.items():
    records = []
    for record, rel, lr_rel, factor in items:
      if rel in skipped:
        continue
      if lr_rel is not None:
        record = record._replace(
            lr_path=os.path.join(build_path, *lr_rel.split("/")),
            lr_factor=factor)
        images[rel] = {"factor": factor, "lr": lr_rel, "origin": "built"}
      elif record.lr_path is not None:
        # Given LR files (pre-built folder, genuine LR) are recorded relative
        # to the dataset root when inside it, so the manifest holds no
        # machine-specific paths for them.
        given = (_relative(record.lr_path, source_root)
                 if checks.is_inside(record.lr_path, source_root)
                 else record.lr_path)
        images[rel] = {"factor": record.lr_factor, "lr": given,
                       "origin": "given"}
      records.append(record)
    checks.require_nonempty(split, records, source.name)
    splits[split] = tuple(records)
    identities[split] = sorted({r.pid for r in records})
  checks.check_gallery_matches(
      splits["query"], splits["gallery"], source.name,
      by_image=source.gallery_exclusion == QUERY_IMAGE_ONLY)
  benchmark = dataclasses.replace(source, **splits)
  overlap = checks.train_test_overlap(benchmark)
  if overlap:
    logging.warning(
        "%s: %d training identities also appear in the query or gallery "
        "split (%s); the MLR protocols keep them apart, so the results are "
        "not comparable with published ones.", source.name, len(overlap),
        checks.list_names(overlap))
  return benchmark, {"identities": identities, "lr_images": images,
                     "skipped_unreadable": sorted(skipped)}


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _reuse(source: Benchmark, plan, build_path: str, source_root: str,
           key: dict[str, Any]) -> BuiltBenchmark:
  manifest_path = os.path.join(build_path, MANIFEST_NAME)
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.BuildDirError(
        f"{build_path} exists but its manifest cannot be read ({e}); it is "
        f"not a complete build. Remove it or choose another build_dir.") from e
  if manifest.get("key") != key:
    old = manifest.get("key", {})
    raise errors.BuildDirError(
        f"{build_path} holds a different build ("
        + "; ".join(f"{k}: built {old.get(k)!r}, requested {key.get(k)!r}"
                    for k in _changed(old, key))
        + "). It is not overwritten: choose another build_dir or remove it.")
  benchmark, data = _finish(source, plan, build_path, source_root,
                            set(manifest.get("skipped_unreadable", [])))
  if data["lr_images"] != manifest.get("lr_images"):
    changed = _changed(manifest.get("lr_images", {}), data["lr_images"])
    raise errors.BuildDirError(
        f"The dataset changed since {build_path} was built: "
        f"{len(changed)} image(s) differ: {checks.list_names(changed)}. "
        f"Remove the build or choose another build_dir.")
  missing = [p for p in manifest["files"]
             if not os.path.isfile(os.path.join(build_path, p))]
  if missing:
    raise errors.BuildDirError(
        f"{build_path} is incomplete: {len(missing)} file(s) missing: "
        f"{checks.list_names(missing)}. Remove it and build again.")
  return BuiltBenchmark(benchmark, build_path, manifest)


def _write_build(tmp: str, source: Benchmark, plan, build_path: str,
                 source_root: str, key: Mapping[str, Any],
                 skip_unreadable: bool) -> tuple[Benchmark, dict[str, Any]]:
  """Down-samples the planned images into `tmp` and writes the manifest."""
  jobs = [item for split in SPLITS for item in plan[split]]
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    results = list(pool.map(lambda item: _process(item, tmp), jobs))
  failures = [(rel, msg) for (_, rel, _, _), (msg, _) in zip(jobs, results)
              if msg is not None]
  if failures and not skip_unreadable:
    raise errors.UnreadableImageError(
        f"{len(failures)} image(s) cannot be decoded: "
        f"{checks.list_names([m for _, m in failures], 5)}. Pass the "
        f"skip_unreadable option to leave them out.")
  if failures:
    logging.warning("%s: skipped %d unreadable image(s): %s", source.name,
                    len(failures),
                    checks.list_names([r for r, _ in failures]))
  # An image that fails to decode has no LR file (_process writes none).
  files = {lr_rel: digest for (_, _, lr_rel, _), (_, digest)
           in zip(jobs, results) if digest is not None}
  benchmark, data = _finish(source, plan, build_path, source_root,
                            {rel for rel, _ in failures})
  manifest = {"key": key, **data, "files": dict(sorted(files.items()))}
  with open(os.path.join(tmp, MANIFEST_NAME), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
  return benchmark, manifest


def build_mlr(source: Benchmark, *, source_root: str, build_dir: str,
              build_name: str, seed: int, lr_splits: Sequence[str],
              options: Mapping[str, Any],
              factors: Sequence[int] = DEFAULT_FACTORS,
              skip_unreadable: bool = False,
              protected_roots: Sequence[str] = ()) -> BuiltBenchmark:
  """Builds (or reuses) the LR side of a benchmark; see the module doc.

  Which images get an LR version is the caller's choice: every record of
  `lr_splits` without an `lr_path`. Records that carry one (a pre-built MLR
  folder, CAVIAR's genuine LR camera) are kept and recorded. Every HR image
  is decoded once here.

  Args:
    source: the benchmark with HR records (and any given LR versions).
    source_root: the folder every HR path lies under; manifest paths and the
      factor draw are relative to it.
    build_dir: the parent folder of builds; created when missing.
    build_name: the build's sub-folder, e.g. "mlr_viper-seed0-split3".
    seed: drives the factor draw (and is recorded).
    lr_splits: splits whose records without an LR version get one.
    options: the caller's options, recorded in the manifest key (JSON-able).
    factors: the factors r to draw from.
    skip_unreadable: drop undecodable images (logged and listed in the
      manifest) instead of raising.
    protected_roots: user folders the build may not be written into (the
      dataset root, a pre-built LR folder); `source_root` is always one.

  Returns:
    The BuiltBenchmark: records with `lr_path`/`lr_factor` set, the build
    folder and its manifest.

  Raises:
    BuildDirError: `build_dir` lies inside a protected folder, or the build
      folder holds a different build, or the dataset changed since.
    UnreadableImageError: an HR image cannot be decoded.
    EmptySplitError, SplitError: a split is empty or a query identity has no
      gallery match once unreadable images are dropped.
  """
  factors = tuple(int(r) for r in factors)
  if not factors or any(r < 2 for r in factors):
    raise ValueError(f"factors must be integers >= 2, got {factors}")
  build_dir = os.path.abspath(os.path.expanduser(build_dir))
  source_root = os.path.abspath(source_root)
  checks.require_outside(build_dir, (source_root, *protected_roots))
  key = {"builder_version": BUILDER_VERSION, "dataset": source.name,
         "seed": seed, "factors": list(factors),
         "lr_splits": sorted(lr_splits), "skip_unreadable": skip_unreadable,
         "options": json.loads(json.dumps(dict(options), sort_keys=True))}
  plan = _plan(source, source_root, seed, lr_splits, factors)
  build_path = os.path.join(build_dir, build_name)
  if os.path.exists(build_path):
    return _reuse(source, plan, build_path, source_root, key)

  try:
    with atomic.atomic_directory(build_path) as tmp:
      benchmark, manifest = _write_build(tmp, source, plan, build_path,
                                         source_root, key, skip_unreadable)
  except atomic.TargetExistsError:
    # Another process finished the same build first: use (and check) it.
    return _reuse(source, plan, build_path, source_root, key)
  logging.info("%s: built %d LR image(s) in %s", source.name,
               len(manifest["files"]), build_path)
  return BuiltBenchmark(benchmark, build_path, manifest)

