r"""The paper's tables II-VII, and the single-shot protocols, as commands.

    python scripts/reproduce.py --table=II [--config=configs/demo.py] \
        [--workdir=workdirs/table_II] [--splits=10] [--seeds=2] \
        [--config.a.b=value ...]
    python scripts/reproduce.py --table=II --dry_run     # the rows, run nothing
    python scripts/reproduce.py --markdown > docs/ablations.md

Each row of a table is the main command (`python -m pshrnet_jax.main`) with
the row's overrides (`scripts/paper_tables.py`'s TABLES, the one place they
are written; docs/ablations.md lists them, written by `--markdown`) in
`WORKDIR/<row>`
(`WORKDIR/<config>/<row>` for a table on several configs). Each table runs
on the benchmark configs the paper used unless `--config` names one (e.g.
`configs/demo.py`). Rows whose phase 1 is the same share one teacher,
trained once in `WORKDIR/teacher`; rows without L_PS train phase 2 alone
(paper_tables.py's docstring).

A finished row (its results.json exists) is skipped, and a row stopped
half-way resumes from its checkpoints, so a killed table continues where it
stopped. The table is written to `WORKDIR/table_<N>.md` and `.json`: the
table's figures (Rank-1/5/10 and mAP; Rank-1 and mAP for HR-only tables;
PSNR/SSIM in both conventions for Table III) of each row's headline model,
beside the paper's figure where docs/SPEC.md gives one (SPEC 6: the full
model only; it lists no per-row ablation figures). Table files that exist
are refused before any row runs, unless --overwrite.

`--splits=N` runs every row on `data.split_index` 0..N-1 (MLR-VIPeR, CAVIAR
and MLR-CUHK03 are reported as the mean over 10 random splits, each trained
separately) and reports mean +- std over the splits; `eval.trials` keeps
its meaning within a split (gallery re-draws). `--seeds=N` runs every row
with `seed` 0..N-1 (each its own teacher, in `.../seed_<n>`) and reports
mean +- std over the seeds (over every split and seed with both). Without
--table it runs the default model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Sequence

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from data_pipelines import atomic
from scripts import paper_tables
from scripts.paper_tables import COLUMNS, DEFAULT, OWN, SHARED, TABLES
from scripts.paper_tables import Row, Table
# pylint: enable=g-import-not-at-top,wrong-import-position

PAPER_COLUMN = {"reid": ("paper Rank-1/5/10", paper_tables.PAPER),
                "hr": ("paper Rank-1/mAP", paper_tables.PAPER_HR),
                "sr": ("paper PSNR/SSIM", paper_tables.PAPER_SR)}


def figures(results: dict, report: str) -> dict:
  """The table's figures from a row's results.json (None where absent)."""
  source = (results.get("sr") or {}) if report == "sr" else results
  return {key: source.get(key) for key, _ in COLUMNS[report]}


def _main(config: str, workdir: str, *flags: str) -> None:
  argv = [sys.executable, "-m", "pshrnet_jax.main", f"--config={config}",
          f"--workdir={workdir}", *flags]
  print("$ python " + " ".join(argv[1:]), flush=True)
  proc = subprocess.run(argv, cwd=_REPO)
  if proc.returncode:
    raise SystemExit(f"the row's command failed (exit {proc.returncode}); "
                     "fix it and run reproduce.py again to continue")


def run_row(row: Row, config: str, workdir: str, extra: Sequence[str],
            split: int | None, seed: int | None = None) -> dict:
  """Trains and evaluates one row (skipped when finished); its results.

  `extra` holds the table's common flags and the user's overrides; a
  shared teacher is trained with those alone.
  """
  split_flags = (
      (() if split is None else (f"--config.data.split_index={split}",))
      + (() if seed is None else (f"--config.seed={seed}",)))
  suffix = (("" if split is None else f"/split_{split}")
            + ("" if seed is None else f"/seed_{seed}"))
  row_dir = os.path.join(workdir, row.key + suffix)
  results = os.path.join(row_dir, "results.json")
  if not os.path.exists(results):
    flags = (*extra, *split_flags, *row.overrides)
    if row.teacher == OWN:
      _main(config, row_dir, *flags, "--config.mode=all")
    else:
      shared = ()
      if row.teacher == SHARED:
        teacher = os.path.join(workdir, "teacher" + suffix)
        if not os.path.exists(os.path.join(teacher, "phase1", "teacher")):
          _main(config, teacher, *extra, *split_flags, "--config.mode=phase1")
        shared = (f"--config.teacher_dir="
                  f"{os.path.join(teacher, 'phase1', 'teacher')}",)
      _main(config, row_dir, *flags, *shared, "--config.mode=phase2")
      _main(config, row_dir, *flags, *shared, "--config.mode=eval")
  with open(results) as f:
    return json.load(f)


def _decimals(metric: str) -> int:
  return 4 if metric.startswith("ssim") else 2


def aggregate_splits(entries: Sequence[dict]) -> dict:
  """Mean and standard deviation (population) of each figure over the runs
  of a row (splits, seeds; each entry: figure -> value, as `figures`
  returns)."""
  out = {"runs": len(entries)}
  for metric in entries[0]:
    values = [e[metric] for e in entries]
    if any(v is None for v in values):
      out[metric] = out[f"{metric}_std"] = None
      continue
    values = np.array(values, np.float64)
    out[metric] = round(float(values.mean()), _decimals(metric))
    out[f"{metric}_std"] = round(float(values.std()), _decimals(metric))
  return out


def _cell(entry: dict, metric: str) -> str:
  value, digits = entry.get(metric), _decimals(metric)
  if value is None:
    return "-"
  if entry.get(f"{metric}_std") is not None and entry.get("runs", 1) > 1:
    return f"{value:.{digits}f} ± {entry[f'{metric}_std']:.{digits}f}"
  return f"{value:.{digits}f}"


def _paper_cell(table: Table, row: Row, benchmark: str) -> str:
  paper = PAPER_COLUMN[table.report][1].get(benchmark)
  return "/".join(f"{v:g}" for v in paper) if paper and row.full_model else "-"


def write_table(workdir: str, name: str, table: Table,
                sections: Sequence[tuple[str, str, Sequence[dict]]]) -> str:
  """table_<name>.md and .json for `sections` of (config, benchmark, one
  figures entry per row); returns the Markdown."""
  columns = COLUMNS[table.report]
  lines = [f"# Table {name}: {table.title}"]
  for config, benchmark, entries in sections:
    lines += ["", f"On {benchmark} (`{config}`):", "",
              "| row | " + " | ".join(t for _, t in columns)
              + f" | {PAPER_COLUMN[table.report][0]} |",
              "|---" * (len(columns) + 2) + "|"]
    for row, entry in zip(table.rows, entries):
      cells = " | ".join(_cell(entry, m) for m, _ in columns)
      lines.append(f"| {row.name} | {cells} | "
                   f"{_paper_cell(table, row, benchmark)} |")
  lines += ["", "Paper figures: docs/SPEC.md section 6 (the full model "
            "only; it lists no per-row ablation figures)."]
  if table.report == "sr":
    lines += ["Y: the SR literature's convention; RGB: this project's first"
              " (pshrnet_jax/evaluation/sr_quality.py)."]
  text = "\n".join(lines) + "\n"
  md, js = table_files(workdir, name)
  with atomic.atomic_file(md) as tmp, open(tmp, "w") as f:
    f.write(text)
  with atomic.atomic_file(js) as tmp, open(tmp, "w") as f:
    json.dump({"table": name, "title": table.title, "sections": [
        {"config": c, "benchmark": b, "rows": [
            {"row": r.name, "overrides": [*table.common, *r.overrides], **e}
            for r, e in zip(table.rows, entries)]}
        for c, b, entries in sections]}, f, indent=2)
  return text


def table_files(workdir: str, name: str) -> tuple[str, str]:
  """table_<name>.md and .json in `workdir`."""
  return tuple(os.path.join(workdir, f"table_{name}.{ext}")
               for ext in ("md", "json"))


def plan(name: str, configs: Sequence[str], user: Sequence[str] = ()
         ) -> list[str]:
  """`--dry_run`'s lines: per config and row, "row | config | flags |
  teacher", the flags exactly as the row's main command gets them."""
  table = TABLES[name]
  return [f"{row.name} | {config} | "
          f"{paper_tables.command((*table.common, *user, *row.overrides))} | "
          f"phase 1: {paper_tables.TEACHER_WORDS[row.teacher]}"
          for config in configs for row in table.rows]


def markdown() -> str:
  """docs/ablations.md (`paper_tables.markdown`)."""
  return paper_tables.markdown()


def _stem(config: str) -> str:
  return os.path.splitext(os.path.basename(config.split(":")[0]))[0]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--table", choices=list(TABLES))
  parser.add_argument("--config", help="run the table on this config "
                      "instead of the paper's (e.g. configs/demo.py)")
  parser.add_argument("--workdir")
  parser.add_argument("--splits", type=int, default=0)
  parser.add_argument("--seeds", type=int, default=0,
                      help="run every row with seeds 0..N-1; mean +- std")
  parser.add_argument("--overwrite", action="store_true",
                      help="write table_N.md/.json over existing ones")
  parser.add_argument("--dry_run", action="store_true",
                      help="print each row's config and flags; run nothing")
  parser.add_argument("--markdown", action="store_true",
                      help="print docs/ablations.md and exit")
  args, extra = parser.parse_known_args(argv)
  for flag in ("splits", "seeds"):
    if getattr(args, flag) < 0:
      parser.error(f"--{flag}={getattr(args, flag)}: expected a number of "
                   f"{flag} >= 1 (or 0: the config's {flag[:-1]} alone)")
  if args.markdown:
    print(markdown(), end="")
    return
  bad = [a for a in extra if not a.startswith("--config.")]
  if bad:
    parser.error(f"unknown arguments {bad} (only --config.* overrides pass "
                 "through)")
  name = args.table or "default"
  table = TABLES[args.table] if args.table else DEFAULT
  configs = (args.config,) if args.config else table.configs
  if args.dry_run:
    if not args.table:
      parser.error("--dry_run needs --table")
    print(f"# Table {name}: {table.title}")
    print("\n".join(plan(name, configs, extra)))
    return
  workdir = os.path.abspath(args.workdir or os.path.join(
      "workdirs", f"table_{name}" if args.table else "splits"))
  try:  # Before any row runs: a finished table is not written over.
    for path in table_files(workdir, name):
      atomic.refuse_to_clobber(path, overwrite=args.overwrite, flag="")
  except FileExistsError as e:
    parser.error(str(e))
  splits = range(args.splits) if args.splits else [None]
  seeds = range(args.seeds) if args.seeds else [None]
  sections = []
  for config in configs:
    config_dir = (workdir if len(configs) == 1
                  else os.path.join(workdir, _stem(config)))
    os.makedirs(config_dir, exist_ok=True)
    entries, benchmark = [], ""
    for row in table.rows:
      results = [run_row(row, config, config_dir, [*table.common, *extra], s,
                         n) for s in splits for n in seeds]
      benchmark = results[0].get("dataset", benchmark)
      rows = [figures(r, table.report) for r in results]
      entries.append(aggregate_splits(rows) if len(rows) > 1 else rows[0])
    sections.append((config, benchmark, entries))
  print(write_table(workdir, name, table, sections))


if __name__ == "__main__":
  main()
