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

'demo' generates its Market-style HR set under the build dir first.
MLR-Market / MLR-Duke: SPEC 5 says "images of one camera" are LR, but the
distributed MLR folders (and published numbers) down-sample every query, so
all queries are LR by default; `lr_query_cameras=[c, ...]` (0-based) keeps
only those cameras' queries, for the one-camera reading.

Options: `DEFAULT_OPTIONS` (unknown keys are an error listing the valid ones).
Builds go to `<build_dir>/<name>-seed<S>[-split<I>]-root<hash of the
dataset folder>[-<hash of non-default options>]/` (builders/mlr.py; the
demo's without a root); the HR-only sets get a build too (a manifest,
no images), so their images are checked once, not at every load.
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
from data_pipelines.readers import checks
from data_pipelines.readers import cuhk03
from data_pipelines.readers import folder as folder_reader
from data_pipelines.readers import market
from data_pipelines.readers import viper
from data_pipelines.records import Benchmark

_COMMON = {"skip_unreadable": False}
_MLR = {**_COMMON, "factors": list(mlr.DEFAULT_FACTORS)}
# lr_root: a pre-built MLR folder in Market layout, paired by file name (its
# bounding_box_train/ when present, else training LR images are built).
_MARKET_MLR = {**_MLR, "lr_query_cameras": None, "lr_root": None}
# test_ids: explicit test pids instead of the published or seeded ones.
# caviar: single_camera_train adds the 22 single-camera people to training;
# genuine_lr_train trains on the training people's LR-camera images (L_ID).
# folder: the fractions of the identities that train, and of each test
# identity's images that are queries.
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
_HR_ONLY = ("market1501", "dukemtmc")


def _abs(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


def _normalise(value: Any) -> Any:
  """JSON-stable form of an option value ('' means unset, tuples -> lists)."""
  if isinstance(value, (tuple, list)):
    return [_normalise(v) for v in value]
  return None if value == "" else value


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
               options: Mapping[str, Any], root: Optional[str] = None) -> str:
  """The build folder name: readable for defaults, hashed overrides, and
  the dataset's folder (`checks.root_tag`), so that two copies of one
  benchmark never share a build (the demo set generates its own, from the
  seed)."""
  parts = [name] if name in _HR_ONLY else [f"{name}-seed{seed}"]
  if name in _SPLIT_SETS:
    parts.append(f"split{split_index}")
  if root and name != "demo":
    parts.append(checks.root_tag(root))
  changed = {k: v for k, v in options.items()
             if v != DEFAULT_OPTIONS[name][k]}
  if changed:
    digest = hashlib.sha256(
        json.dumps(changed, sort_keys=True).encode()).hexdigest()
    parts.append(digest[:8])
  return "-".join(parts)


def _market_source(name: str, root: Optional[str], options: dict[str, Any]
                   ) -> tuple[Benchmark, list[str]]:
  """The Market-style records (LR queries and pre-built LR paired in) and the
  user folders the build must stay out of."""
  dataset = "dukemtmc" if name in ("dukemtmc", "mlr_dukemtmc") else "market1501"
  hr = market.read_market_layout(root, dataset)
  if name in _HR_ONLY:
    return hr, []
  query = hr.query
  if options["lr_query_cameras"] is not None:
    cameras = set(options["lr_query_cameras"])
    query = tuple(r for r in query if r.camid in cameras)
  splits = {"train": hr.train, "query": query}
  lr_root = options["lr_root"]
  if not lr_root:
    return dataclasses.replace(hr, name=name, **splits), []
  for split in splits:
    if split == "train" and not os.path.isdir(
        os.path.join(lr_root, market.SPLIT_DIRS["train"])):
      continue  # no pre-built training LR: the builder makes it
    paired = market.read_prebuilt_lr(lr_root, split, splits[split], dataset)
    splits[split] = tuple(
        r._replace(lr_path=paired[r.hr_path][0],
                   lr_factor=paired[r.hr_path][1]) for r in splits[split])
  return dataclasses.replace(hr, name=name, **splits), [lr_root]


def prepare_benchmark(name: str, root: Optional[str], *, build_dir: str,
                      seed: int = 0, split_index: int = 0,
                      options: Optional[Mapping[str, Any]] = None
                      ) -> mlr.BuiltBenchmark:
  """Like `load_benchmark`, also returning the build folder and manifest."""
  options = resolve_options(name, options)
  if name not in _SPLIT_SETS and split_index != 0:
    raise ConfigError(f"--config.data.split_index={split_index}: {name} has "
                      "a single split; split_index must be 0.")
  build_dir = _abs(build_dir)
  # The splits that get built LR versions: none on the HR-only sets; CAVIAR's
  # queries are genuinely LR, so only its training images.
  lr_splits = (() if name in _HR_ONLY else ("train",) if name == "caviar"
               else ("train", "query"))
  source_root, protected = None, []
  if name == "demo":
    from data_pipelines.builders import synthetic  # pylint: disable=g-import-not-at-top
    root = synthetic.generate_demo(
        os.path.join(build_dir, f"demo-source-seed{seed}"), seed)
  if name in _HR_ONLY + ("mlr_market1501", "mlr_dukemtmc", "demo"):
    source, protected = _market_source(name, root, options)
  elif name == "mlr_cuhk03":
    data = cuhk03.extract_cuhk03(root, build_dir=build_dir,
                                 image_type=options["cuhk03_images"])
    source = cuhk03.cuhk03_split(
        data, split_index, lr_camera_in_pair=options["lr_camera_in_pair"],
        test_ids=options["test_ids"])
    source_root, protected = data.images_root, [_abs(root)]
  elif name == "mlr_viper":
    source = viper.viper_split(
        viper.read_viper(root), seed=seed, trial=split_index,
        lr_camera=options["lr_camera"], test_ids=options["test_ids"])
  elif name == "folder":
    source = folder_reader.folder_split(
        folder_reader.read_folder(root), seed=seed,
        train_fraction=options["train_fraction"],
        query_fraction=options["query_fraction"])
  else:
    source = caviar.caviar_split(
        caviar.read_caviar(root), seed=seed, trial=split_index,
        lr_camera=options["lr_camera"], test_ids=options["test_ids"],
        single_camera_train=options["single_camera_train"],
        genuine_lr_train=options["genuine_lr_train"])
  return mlr.build_mlr(
      source, source_root=source_root or _abs(root), build_dir=build_dir,
      build_name=build_name(name, seed, split_index, options, root),
      seed=seed if lr_splits else 0, lr_splits=lr_splits, options=options,
      factors=options.get("factors", mlr.DEFAULT_FACTORS),
      skip_unreadable=options["skip_unreadable"], protected_roots=protected)


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
