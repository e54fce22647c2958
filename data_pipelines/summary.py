"""Prints what a benchmark holds, so users can check their copy before training.

    python -m data_pipelines.summary --dataset=mlr_viper --root=/data/VIPeR \
        [--build_dir=DIR] [--seed=0] [--split_index=0] [--option=key=value]... \
        [--json]

Per split: images, identities, cameras and, where there are LR versions, the
images per down-sampling factor (0 = unknown, from a pre-built folder; 1 =
genuine LR); and the evaluation's gallery_exclusion rule. The first run
builds the benchmark (benchmarks.py); a bad dataset copy is reported in one
message on stderr, exit status 1.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags

from data_pipelines import benchmarks
from data_pipelines import cli as cli_lib
from data_pipelines import errors
from data_pipelines import records
from data_pipelines.records import Benchmark, ImageRecord

DEFAULT_BUILD_DIR = os.path.join("~", ".cache", "pshrnet_jax", "data")


def split_summary(records: Sequence[ImageRecord]) -> dict[str, Any]:
  """{'images', 'identities', 'cameras', 'camera_ids'} of a split, and
  'lr_factors' ({factor (str): image count}) when it has LR versions."""
  summary = {
      "images": len(records),
      "identities": len({r.pid for r in records}),
      "cameras": len({r.camid for r in records}),
      "camera_ids": sorted({r.camid for r in records}),
  }
  counts = collections.Counter(r.lr_factor for r in records
                               if r.lr_path is not None)
  if counts:
    summary["lr_factors"] = {str(k): counts[k] for k in sorted(counts)}
  return summary


def summarize(benchmark: Benchmark) -> dict[str, Any]:
  """The summary of every split of `benchmark` (see `split_summary`)."""
  return {
      "dataset": benchmark.name,
      "protocol": benchmark.protocol,
      "gallery_exclusion": benchmark.gallery_exclusion,
      "splits": {split: split_summary(getattr(benchmark, split))
                 for split in ("train", "query", "gallery")},
  }


def format_table(summary: dict[str, Any]) -> str:
  """A readable table of `summarize`'s output."""
  lines = [f"{summary['dataset']} ({summary['protocol']})"]
  if "build" in summary:
    lines.append(f"build: {summary['build']}")
  if summary.get("gallery_exclusion") == records.QUERY_IMAGE_ONLY:
    lines.append("no camera ids: the evaluation removes only the query "
                 "image itself from its gallery")
  lines.append(f"{'split':<8} {'images':>7} {'ids':>6} {'cams':>5}  "
               f"LR images per factor")
  for split, s in summary["splits"].items():
    factors = ", ".join(
        f"x{k}: {v}" for k, v in s.get("lr_factors", {}).items())
    lines.append(f"{split:<8} {s['images']:>7} {s['identities']:>6} "
                 f"{s['cameras']:>5}  {factors or '-'}")
  if summary.get("skipped_unreadable"):
    lines.append(f"skipped unreadable images: {summary['skipped_unreadable']}")
  return "\n".join(lines)


def _parse_option(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise ValueError(f"--option expects key=value, got {text!r}")
  try:
    return key, json.loads(value)  # numbers, lists, true/false, null
  except ValueError:
    return key, value  # a plain string such as a path


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this tool's flags on `flag_values`."""
  fv = {"flag_values": flag_values}
  flags.DEFINE_enum("dataset", None, list(benchmarks.NAMES), "Benchmark name.",
                    **fv)
  flags.DEFINE_string("root", None, "The dataset folder (published layout).",
                      **fv)
  flags.DEFINE_string("build_dir", DEFAULT_BUILD_DIR,
                      "Where built data (LR images, manifests) goes.", **fv)
  flags.DEFINE_integer("seed", 0, "MLR / split seed.", **fv)
  flags.DEFINE_integer("split_index", 0, "CUHK03 test set or trial index.",
                       **fv)
  flags.DEFINE_multi_string(
      "option", [], "A benchmark option as key=value (JSON value or string), "
      "e.g. lr_root=/data/MLR-Market, lr_query_cameras=[0].", **fv)
  flags.DEFINE_bool("json", False, "Print JSON instead of a table.", **fv)


def run(dataset: str, root: str, *, build_dir: str, seed: int = 0,
        split_index: int = 0, options: Sequence[str] = (),
        as_json: bool = False) -> str:
  """Loads (building if needed) a benchmark and returns its summary text.

  Args:
    dataset, root, build_dir, seed, split_index: as the flags of those names.
    options: "key=value" option strings (--option).
    as_json: JSON (sorted keys) instead of a table.

  Returns:
    The text to print.
  """
  built = benchmarks.prepare_benchmark(
      dataset, root, build_dir=build_dir, seed=seed, split_index=split_index,
      options=dict(_parse_option(o) for o in options))
  summary = summarize(built.benchmark)
  summary.update(build=built.path, seed=seed, split_index=split_index,
                 skipped_unreadable=len(built.manifest["skipped_unreadable"]))
  if as_json:
    return json.dumps(summary, indent=1, sort_keys=True)
  return format_table(summary)


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS
         ) -> None:
  """Entry point: prints the summary, or one error message and exits 1."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  fv = flag_values
  if fv.dataset is None:
    raise app.UsageError("--dataset is required.")
  try:
    text = run(fv.dataset, fv.root, build_dir=fv.build_dir, seed=fv.seed,
               split_index=fv.split_index, options=fv.option,
               as_json=fv.json)
  except (errors.DatasetError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(text)


def cli():
  """The console script (pyproject.toml)."""
  define_flags()
  cli_lib.run(main, __name__)


if __name__ == "__main__":
  cli()
