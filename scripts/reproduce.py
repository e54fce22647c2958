r"""The paper's ablation tables, and the single-shot protocols, as commands.

    python scripts/reproduce.py --table=II [--config=configs/demo.py] \
        [--workdir=workdirs/table_II] [--splits=10] [--config.a.b=value ...]
    python scripts/reproduce.py --markdown > docs/ablations.md

Each row of a table is the main command (`python -m pshrnet_jax.main`) with
the row's overrides (TABLES below; docs/ablations.md lists them, written by
`--markdown`), in `WORKDIR/<row>`; rows
whose phase-1 teacher is the same (Tables II, IV, VII: only phase 2
differs) share one teacher, trained once in `WORKDIR/teacher`. A finished
row (its results.json exists) is skipped, and a row stopped half-way
resumes from its checkpoints, so a killed table continues where it
stopped. The table is written to `WORKDIR/table_<N>.md` and `.json`:
Rank-1/5/10 and mAP of each row's headline model on the benchmark's
queries, beside the paper's figure where docs/SPEC.md gives one (SPEC 6:
the full model's results; it lists no per-row ablation figures).

`--splits=N` runs every row on `data.split_index` 0..N-1 (MLR-VIPeR, CAVIAR
and MLR-CUHK03 are reported as the mean over 10 random splits, each trained
separately) and reports mean +- std over the splits; `eval.trials` keeps
its meaning within a split (gallery re-draws). Without --table it runs the
default model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from typing import Sequence

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of a table: its name and the overrides it adds.

  Attributes:
    name: the row as docs/ablations.md names it.
    overrides: `--config.*` flags of the row ("(default)": none).
    shares_teacher: whether phase 1 is the table's common teacher (the
      overrides change phase 2 only).
  """
  name: str
  overrides: tuple[str, ...]
  shares_teacher: bool = True

  @property
  def key(self) -> str:
    """A folder name for the row."""
    keep = "".join(c if c.isalnum() else "_" for c in self.name.lower())
    return "_".join(p for p in keep.split("_") if p)


TABLES: dict[str, tuple[Row, ...]] = {
    "II": (
        Row("ID only", ("--config.loss.sr_weight=0",
                        "--config.loss.ps_weight=0",
                        "--config.model.sr_module=none")),
        Row("SR + ID", ("--config.loss.ps_weight=0",)),
        Row("SR + ID + PS", ()),
    ),
    "IV": (
        Row("ResNet-50 + bicubic up-sampling",
            ("--config.model.sr_module=bicubic",)),
        Row("ResNet-50 + SRCNN", ("--config.model.sr_module=srcnn",)),
        Row("ResNet-50 + VDSR", ("--config.model.sr_module=vdsr",)),
        Row("ResNet-50 + RCAN", ("--config.model.sr_module=rcan",)),
        Row("ResNet-50 + VDSR-CA", ()),
    ),
    "V": (
        Row("pooling avg", ("--config.model.pooling=avg",),
            shares_teacher=False),
        Row("pooling max", ("--config.model.pooling=max",),
            shares_teacher=False),
        Row("pooling avg+max", ("--config.model.pooling=avgmax",),
            shares_teacher=False),
    ),
    "VII": (
        Row("PS features {Seq5, l_c}",
            ("--config.loss.ps_features=('seq5','logits')",)),
        Row("all six", ("--config.loss.ps_features=('seq1','seq2','seq3',"
                        "'seq4','seq5','logits')",)),
        Row("{Seq1, Seq4, Seq5, l_c}", ()),
    ),
}
DEFAULT_ROW = (Row("default", ()),)
# Overrides every row of a table has, its shared teacher included
# (docs/ablations.md writes them out in each row). Table IV compares SR modules
# in front of a ResNet-50 extractor (SPEC 3); on a benchmark config add
# --config.init_from=<torchvision ResNet-50, converted>.
COMMON = {"IV": ("--config.model.backbone=resnet50",)}

# Table VI compares extractors trained and tested on HR images: its own
# configs, run with the main command alone (no teacher, no LR queries).
TABLE_VI = (
    Row("HRNet-ReID on HR data", ("--config=configs/hr_market1501.py",)),
    Row("HRNet-W32-C with its ImageNet representation head, on HR data",
        ("--config=configs/hr_market1501.py", "--config.model.head=imagenet")),
)

# SPEC 6: PS-HRNet's Rank-1/5/10 on the cross-resolution benchmarks.
PAPER = {"mlr_market1501": (91.5, 96.7, 97.9), "mlr_cuhk03": (92.6, 98.3, 99.4),
         "mlr_viper": (48.7, 73.4, 81.7), "mlr_dukemtmc": (82.3, 90.5, 92.8),
         "caviar": (48.2, 84.5, 96.3)}
METRICS = ("rank1", "rank5", "rank10", "mAP")
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")


def _main(config: str, workdir: str, *flags: str) -> None:
  argv = [sys.executable, "-m", "pshrnet_jax.main", f"--config={config}",
          f"--workdir={workdir}", *flags]
  print("$ " + " ".join(argv[1:]), flush=True)
  proc = subprocess.run(argv, cwd=_REPO)
  if proc.returncode:
    raise SystemExit(f"the row's command failed (exit {proc.returncode}); "
                     "fix it and run reproduce.py again to continue")


def run_row(row: Row, config: str, workdir: str, extra: Sequence[str],
            split: int | None) -> dict:
  """Trains and evaluates one row (skipped when finished); its results.

  `extra` holds the user's overrides and the table's COMMON ones; the
  shared teacher is trained with those alone.
  """
  split_flags = () if split is None else (f"--config.data.split_index={split}",)
  suffix = "" if split is None else f"/split_{split}"
  row_dir = os.path.join(workdir, row.key + suffix)
  results = os.path.join(row_dir, "results.json")
  if not os.path.exists(results):
    flags = (*extra, *split_flags, *row.overrides)
    if row.shares_teacher:
      teacher = os.path.join(workdir, "teacher" + suffix)
      if not os.path.exists(os.path.join(teacher, "phase1", "teacher")):
        _main(config, teacher, *extra, *split_flags, "--config.mode=phase1")
      shared = f"--config.teacher_dir={os.path.join(teacher, 'phase1', 'teacher')}"
      _main(config, row_dir, *flags, shared, "--config.mode=phase2")
      _main(config, row_dir, *flags, shared, "--config.mode=eval")
    else:
      _main(config, row_dir, *flags, "--config.mode=all")
  with open(results) as f:
    return json.load(f)


def aggregate_splits(results: Sequence[dict]) -> dict:
  """Mean and standard deviation (population) of each metric over splits."""
  out = {"splits": len(results)}
  for metric in METRICS:
    values = np.array([r[metric] for r in results], np.float64)
    out[metric] = round(float(values.mean()), 2)
    out[f"{metric}_std"] = round(float(values.std()), 2)
  return out


def _cell(entry: dict, metric: str) -> str:
  if f"{metric}_std" in entry and entry.get("splits", 1) > 1:
    return f"{entry[metric]:.2f} ± {entry[f'{metric}_std']:.2f}"
  return "-" if entry.get(metric) is None else f"{entry[metric]:.2f}"


def write_table(workdir: str, name: str, rows: Sequence[Row],
                entries: Sequence[dict], benchmark: str) -> str:
  """table_<name>.md and .json; returns the Markdown."""
  paper = PAPER.get(benchmark)
  lines = [f"# Table {name} on {benchmark}", "",
           "| row | Rank-1 | Rank-5 | Rank-10 | mAP | paper Rank-1/5/10 |",
           "|---|---|---|---|---|---|"]
  for row, entry in zip(rows, entries):
    ours = " | ".join(_cell(entry, m) for m in METRICS)
    theirs = ("/".join(f"{v:.1f}" for v in paper)
              if paper and not row.overrides and not COMMON.get(name)
              else "-")
    lines.append(f"| {row.name} | {ours} | {theirs} |")
  lines += ["", "Paper figures: docs/SPEC.md section 6 (the full model "
            "only; it lists no per-row ablation figures)."]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, f"table_{name}.md"), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, f"table_{name}.json"), "w") as f:
    json.dump({"table": name, "benchmark": benchmark,
               "rows": [{"row": r.name, "overrides": list(r.overrides), **e}
                        for r, e in zip(rows, entries)]}, f, indent=2)
  return text


def _shell(flag: str) -> str:
  """`flag` as typed in a shell: a value with brackets or quotes quoted."""
  key, _, value = flag.partition("=")
  return f'{key}="{value}"' if any(c in value for c in "()' ,") else flag


def _command(flags: Sequence[str]) -> str:
  return " ".join(_shell(f) for f in flags)


def markdown() -> str:
  """docs/ablations.md: every row of TABLES and TABLE_VI with its overrides."""
  srcnn = next(r for r in TABLES["IV"] if "SRCNN" in r.name)
  lines = [
      "# The paper's ablations", "",
      "Written by `python scripts/reproduce.py --markdown > docs/ablations.md`"
      " from the rows the script runs (tests/test_reproduce.py fails when"
      " this file is not current); do not edit it by hand.", "",
      "Every row is the main command with the row's overrides added. Table"
      " IV's SRCNN row on MLR-CUHK03, for example (Table IV's extractor is"
      " ResNet-50, so it starts from torchvision's ImageNet weights):", "",
      "```bash",
      "python -m pshrnet_jax.convert --kind=resnet50"
      " --input=resnet50-0676ba61.pth --output=weights/resnet50",
      "python -m pshrnet_jax.main --config=configs/mlr_cuhk03.py"
      " --workdir=workdirs/cuhk03_resnet50_srcnn \\",
      "    --config.data.root=/data/cuhk03_release"
      " --config.init_from=weights/resnet50 \\",
      "    " + _command((*COMMON["IV"], *srcnn.overrides)),
      "```", "",
      "`python scripts/reproduce.py --table=N` runs a whole table (N: "
      + ", ".join(sorted(TABLES)) + ") on `--config` (default"
      " `configs/demo.py`; any other `--config.*` flag passes through to"
      " every row) into `--workdir` (default `workdirs/table_N`). Rows whose"
      " phase 1 is the same share one teacher, trained once. A finished row"
      " is skipped and a stopped one resumes, so a killed table continues"
      " where it stopped. It writes `table_N.md` and `table_N.json` beside"
      " the paper's figure where docs/SPEC.md gives one (SPEC 6: the full"
      " model only). `--splits=10` trains and evaluates `data.split_index`"
      " 0..9 and reports mean ± std, the protocol of MLR-VIPeR, CAVIAR and"
      " MLR-CUHK03.", "",
      "| table | row | flags added to the main command | phase 1 |",
      "|---|---|---|---|"]
  tables = sorted({**TABLES, "VI": TABLE_VI}.items(),
                  key=lambda t: _ROMAN.index(t[0]))
  for name, rows in tables:
    for row in rows:
      flags = (*COMMON.get(name, ()), *row.overrides)
      cell = f"`{_command(flags)}`" if flags else "(none: the default model)"
      teacher = ("HR only" if name == "VI" else "the table's teacher"
                 if row.shares_teacher else "its own")
      lines.append(f"| {name} | {row.name} | {cell} | {teacher} |")
  lines += ["", "Table VI trains and tests HRNet-ReID on HR images alone"
            " (`configs/hr_market1501.py`, `configs/hr_dukemtmc.py`: phase 1"
            " and evaluation); it is run with the main command, not"
            " reproduce.py."]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--table", choices=sorted(TABLES))
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--workdir")
  parser.add_argument("--splits", type=int, default=0)
  parser.add_argument("--markdown", action="store_true",
                      help="print docs/ablations.md and exit")
  args, extra = parser.parse_known_args(argv)
  if args.markdown:
    print(markdown(), end="")
    return
  bad = [a for a in extra if not a.startswith("--config.")]
  if bad:
    parser.error(f"unknown arguments {bad} (only --config.* overrides pass "
                 "through)")
  name = args.table or "default"
  workdir = os.path.abspath(args.workdir or os.path.join(
      "workdirs", f"table_{name}" if args.table else "splits"))
  os.makedirs(workdir, exist_ok=True)
  rows = TABLES[args.table] if args.table else DEFAULT_ROW
  splits = range(args.splits) if args.splits else [None]
  entries, benchmark = [], ""
  extra = [*COMMON.get(args.table, ()), *extra]
  for row in rows:
    results = [run_row(row, args.config, workdir, extra, s) for s in splits]
    benchmark = results[0].get("dataset", benchmark)
    entries.append(aggregate_splits(results) if args.splits
                   else {m: results[0][m] for m in METRICS})
  print(write_table(workdir, name, rows, entries, benchmark))


if __name__ == "__main__":
  main()
