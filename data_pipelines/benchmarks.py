"""The benchmark registry: one call from a name and a folder to a Benchmark.

    load_benchmark("mlr_viper", "/data/VIPeR", build_dir="/scratch/builds",
                   seed=0, split_index=3)

| name | reader | LR side (default) | protocol |
|---|---|---|---|
| market1501, dukemtmc | readers/market.py | none (HR only) | multi_shot |
| mlr_market1501, mlr_dukemtmc | readers/market.py | all queries; all train | multi_shot |
| mlr_cuhk03 | readers/cuhk03.py | 2nd camera of each pair; train | single_shot |
| mlr_viper | readers/viper.py | camera B; all train | single_shot |
| caviar | readers/caviar.py | genuine LR camera (as is); HR-camera train | single_shot |
| folder | readers/folder.py | all queries; all train | multi_shot |
| demo | builders/synthetic.py | as mlr_market1501 | multi_shot |

'demo' generates its Market-style HR set with
`synthetic.generate_demo(out_dir, seed)` under the build dir, then is read
like mlr_market1501.

MLR-Market / MLR-Duke: SPEC 5 (after SING / CAD-Net) says "images of one
camera" are LR, but the MLR folders the released code and other groups
distribute down-sample every query image, and that is what published numbers
were measured on; so all queries are LR by default and
`lr_query_cameras=[c, ...]` (0-based) keeps only the queries of those
cameras (all LR), for the one-camera reading. The gallery stays HR.

Options (a mapping; unknown keys are an error listing the valid ones):
  all:            skip_unreadable (False), factors ([2, 3, 4]; not for the
                  HR-only sets)
  Market/Duke/demo MLR: lr_query_cameras (None = all), lr_root (a pre-built
                  MLR folder in Market layout, paired by file name; its
                  bounding_box_train/ is used when present, else training
                  LR images are built)
  mlr_cuhk03:     cuhk03_images ('labeled' | 'detected'), lr_camera_in_pair
                  (1 | 0), test_ids (explicit pids instead of testsets row)
  mlr_viper:      lr_camera ('cam_b' | 'cam_a'), test_ids
  caviar:         lr_camera ('auto' | 0 | 1), test_ids,
                  single_camera_train (False: the 22 single-camera people
                  do not train), genuine_lr_train (True: the training
                  people's LR-camera images train L_ID only)
  folder:         train_fraction (0.5, of the identities), query_fraction
                  (0.2, of each test identity's images); your own data,
                  ROOT/<identity>/<image> or ROOT/<camera>/<identity>/<image>

Builds go to `<build_dir>/<name>-seed<S>[-split<I>][-<hash of non-default
options>]/` (see builders/mlr.py); the HR-only sets get a build too (a
manifest, no images) so their images are checked once, not at every load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, Optional

from data_pipelines.builders import mlr
from data_pipelines.errors import ConfigError
from data_pipelines.readers import caviar
from data_pipelines.readers import cuhk03
from data_pipelines.readers import folder as folder_reader
from data_pipelines.readers import market
from data_pipelines.readers import viper
from data_pipelines.records import Benchmark

_COMMON = {"skip_unreadable": False}
_MLR = {**_COMMON, "factors": list(mlr.DEFAULT_FACTORS)}
_MARKET_MLR = {**_MLR, "lr_query_cameras": None, "lr_root": None}
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "market1501": dict(_COMMON),
    "dukemtmc": dict(_COMMON),
    "mlr_market1501": dict(_MARKET_MLR),
    "mlr_dukemtmc": dict(_MARKET_MLR),
    "demo": dict(_MARKET_MLR),
    "mlr_cuhk03": {**_MLR, "cuhk03_images": "labeled",
                   "lr_camera_in_pair": 1, "test_ids": None},
    "mlr_viper": {**_MLR, "lr_camera": "cam_b", "test_ids": None},
    "caviar": {**_MLR, "lr_camera": "auto", "test_ids": None,
               "single_camera_train": False, "genuine_lr_train": True},
    "folder": {**_MLR, "train_fraction": 0.5, "query_fraction": 0.2},
}
NAMES = tuple(DEFAULT_OPTIONS)
# Sets with several published or seeded splits; the others have one.
_SPLIT_SETS = ("mlr_cuhk03", "mlr_viper", "caviar")


def _abs(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


def _normalise(value: Any) -> Any:
  """JSON-stable form of an option value ('' means unset, tuples -> lists)."""
  if value == "":
    return None
  if isinstance(value, (tuple, list)):
    return [_normalise(v) for v in value]
  return value


def resolve_options(name: str, options: Optional[Mapping[str, Any]]
                    ) -> dict[str, Any]:
  """The defaults of `name` overridden by `options`.

  Args:
    name: a registry name.
    options: overrides, or None.

  Returns:
    Every option of `name` with its value.

  Raises:
    ConfigError: unknown benchmark name or option key (a ValueError).
  """
  if name not in DEFAULT_OPTIONS:
    raise ConfigError(f"--config.data.name={name!r}: unknown benchmark; "
                      f"expected one of {NAMES}.")
  resolved = dict(DEFAULT_OPTIONS[name])
  unknown = sorted(set(options or {}) - set(resolved))
  if unknown:
    raise ConfigError(
        f"--config.data.options has {unknown}, which {name} does not take; "
        f"its options are {sorted(resolved)}.")
  for key, value in (options or {}).items():
    resolved[key] = _normalise(value)
  if resolved.get("lr_root"):
    resolved["lr_root"] = _abs(resolved["lr_root"])
  return resolved


def build_name(name: str, seed: int, split_index: int,
               options: Mapping[str, Any]) -> str:
  """The build folder name: readable for defaults, hashed overrides."""
  parts = [name] if name in ("market1501", "dukemtmc") else [
      f"{name}-seed{seed}"]
  if name in _SPLIT_SETS:
    parts.append(f"split{split_index}")
  changed = {k: v for k, v in options.items()
             if v != DEFAULT_OPTIONS[name][k]}
  if changed:
    digest = hashlib.sha256(
        json.dumps(changed, sort_keys=True).encode()).hexdigest()
    parts.append(digest[:8])
  return "-".join(parts)


def _market_style(name: str, root: str, dataset: str, seed: int,
                  options: dict[str, Any], build_dir: str, folder: str
                  ) -> mlr.BuiltBenchmark:
  hr = market.read_market_layout(root, dataset)
  root = _abs(root)
  if name in ("market1501", "dukemtmc"):
    return mlr.build_mlr(
        hr, source_root=root, build_dir=build_dir, build_name=folder, seed=0,
        lr_splits=(), options=options,
        skip_unreadable=options["skip_unreadable"])
  query = hr.query
  if options["lr_query_cameras"] is not None:
    cameras = set(options["lr_query_cameras"])
    query = tuple(r for r in query if r.camid in cameras)
  splits = {"train": hr.train, "query": query}
  protected = []
  if options["lr_root"]:
    lr_root = options["lr_root"]
    protected.append(lr_root)
    for split in ("train", "query"):
      if split == "train" and not os.path.isdir(
          os.path.join(lr_root, market.SPLIT_DIRS["train"])):
        continue  # no pre-built training LR: the builder makes it
      paired = market.read_prebuilt_lr(lr_root, split, splits[split], dataset)
      splits[split] = tuple(
          r._replace(lr_path=paired[r.hr_path][0],
                     lr_factor=paired[r.hr_path][1]) for r in splits[split])
  source = dataclasses.replace(hr, name=name, **splits)
  return mlr.build_mlr(
      source, source_root=root, build_dir=build_dir, build_name=folder,
      seed=seed, lr_splits=("train", "query"), options=options,
      factors=options["factors"], skip_unreadable=options["skip_unreadable"],
      protected_roots=protected)


def prepare_benchmark(name: str, root: Optional[str], *, build_dir: str,
                      seed: int = 0, split_index: int = 0,
                      options: Optional[Mapping[str, Any]] = None
                      ) -> mlr.BuiltBenchmark:
  """Like `load_benchmark`, also returning the build folder and manifest."""
  options = resolve_options(name, options)
  if name not in _SPLIT_SETS and split_index != 0:
    raise ValueError(f"{name} has a single split; split_index must be 0, "
                     f"got {split_index}.")
  build_dir = _abs(build_dir)
  folder = build_name(name, seed, split_index, options)
  common = dict(build_dir=build_dir, build_name=folder, seed=seed,
                options=options, factors=options.get("factors", (2, 3, 4)),
                skip_unreadable=options["skip_unreadable"])
  if name == "demo":
    from data_pipelines.builders import synthetic  # pylint: disable=g-import-not-at-top
    demo_root = synthetic.generate_demo(
        os.path.join(build_dir, f"demo-source-seed{seed}"), seed)
    return _market_style(name, demo_root, "market1501", seed, options,
                         build_dir, folder)
  if name in ("market1501", "mlr_market1501"):
    return _market_style(name, root, "market1501", seed, options, build_dir,
                         folder)
  if name in ("dukemtmc", "mlr_dukemtmc"):
    return _market_style(name, root, "dukemtmc", seed, options, build_dir,
                         folder)
  if name == "mlr_cuhk03":
    data = cuhk03.extract_cuhk03(root, build_dir=build_dir,
                                 image_type=options["cuhk03_images"])
    source = cuhk03.cuhk03_split(
        data, split_index, lr_camera_in_pair=options["lr_camera_in_pair"],
        test_ids=options["test_ids"])
    return mlr.build_mlr(
        source, source_root=data.images_root, lr_splits=("train", "query"),
        protected_roots=[_abs(root)], **common)
  if name == "mlr_viper":
    source = viper.viper_split(
        viper.read_viper(root), seed=seed, trial=split_index,
        lr_camera=options["lr_camera"], test_ids=options["test_ids"])
    return mlr.build_mlr(
        source, source_root=_abs(root),
        lr_splits=("train", "query"), **common)
  if name == "folder":
    source = folder_reader.folder_split(
        folder_reader.read_folder(root), seed=seed,
        train_fraction=options["train_fraction"],
        query_fraction=options["query_fraction"])
    return mlr.build_mlr(source, source_root=_abs(root),
                         lr_splits=("train", "query"), **common)
  # caviar: the query side is genuinely LR; only HR-camera training images
  # get a built LR version.
  source = caviar.caviar_split(
      caviar.read_caviar(root), seed=seed, trial=split_index,
      lr_camera=options["lr_camera"], test_ids=options["test_ids"],
      single_camera_train=options["single_camera_train"],
      genuine_lr_train=options["genuine_lr_train"])
  return mlr.build_mlr(
      source, source_root=_abs(root), lr_splits=("train",),
      **common)


def load_benchmark(name: str, root: Optional[str], *, build_dir: str,
                   seed: int = 0, split_index: int = 0,
                   options: Optional[Mapping[str, Any]] = None) -> Benchmark:
  """Reads (and on first use builds) a benchmark by name.

  Args:
    name: one of NAMES (see the module doc).
    root: the user's copy of the published layout (read only; ignored for
      'demo', which generates its own under `build_dir`).
    build_dir: where built data goes (LR images, extracted CUHK03 images,
      manifests); must not lie inside `root`.
    seed: drives the LR factor draw and the seeded splits.
    split_index: the CUHK03 test set / VIPeR or CAVIAR trial; 0 elsewhere.
    options: per-benchmark options (see the module doc).

  Returns:
    The Benchmark (records with LR versions on the cross-resolution sets).

  Raises:
    ValueError: unknown name or option; a `DatasetError` subclass for bad
      data (see data_pipelines/errors.py).
  """
  return prepare_benchmark(name, root, build_dir=build_dir, seed=seed,
                           split_index=split_index, options=options).benchmark
