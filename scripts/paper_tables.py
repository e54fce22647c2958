"""The paper's tables II-VII as rows of overrides: the one place they are
written. `scripts/reproduce.py` runs them and `markdown()` writes
docs/ablations.md from them (`python scripts/reproduce.py --markdown`).

How a row gets its phase-1 teacher (`Row.teacher`):

- SHARED: the table's rows differ in phase 2 only, so they share one
  teacher, trained once; the row runs phase 2 against it, then evaluation;
- NONE: phase 2 alone, with no teacher (no L_PS; the extractor starts from
  ImageNet weights), then evaluation;
- OWN: the whole main command (`--config.mode=all`), e.g. an HR-only run
  (phase 1 and evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

SHARED, NONE, OWN = "shared", "none", "own"
TEACHER_WORDS = {SHARED: "the table's teacher", NONE: "none (phase 2 only)",
                 OWN: "its own (mode=all)"}


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of a table.

  Attributes:
    name: the row as the paper's table names it ("extra: ..." for a row
      the paper does not have).
    overrides: `--config.*` flags of the row, after the table's common ones.
    teacher: SHARED, NONE or OWN (the module docstring says what each
      runs).
    full_model: the configuration SPEC 6 gives the paper's figures for.
  """
  name: str
  overrides: tuple[str, ...]
  teacher: str = SHARED
  full_model: bool = False

  @property
  def key(self) -> str:
    """A folder name for the row."""
    keep = "".join(c if c.isalnum() else "_" for c in self.name.lower())
    return "_".join(p for p in keep.split("_") if p)


@dataclasses.dataclass(frozen=True)
class Table:
  """A paper table: what it compares, where, which figures, its rows.

  Attributes:
    title: what the table varies, in the paper's terms.
    configs: the benchmark config(s) the paper reports it on.
    report: 'reid' (Rank-1/5/10, mAP), 'hr' (Rank-1, mAP) or 'sr' (PSNR
      and SSIM, both conventions of evaluation/sr_quality.py).
    rows: the rows, in the paper's order, extras last.
    common: flags every row and its teacher get.
  """
  title: str
  configs: tuple[str, ...]
  report: str
  rows: tuple[Row, ...]
  common: tuple[str, ...] = ()


MLR_CUHK03 = ("configs/mlr_cuhk03.py",)
HR = ("configs/hr_market1501.py", "configs/hr_dukemtmc.py")
NO_PS = "--config.loss.ps_weight=0"
_SR_MODULES = (("bicubic", "bicubic up-sampling"), ("srcnn", "SRCNN"),
               ("vdsr", "VDSR"), ("rcan", "RCAN"), ("vdsr_ca", "VDSR-CA"))

TABLES: dict[str, Table] = {
    "II": Table(
        "Supervision of the student (VDSR-CA + HRNet-ReID)", MLR_CUHK03,
        "reid", (
            Row("ID: VDSR-CA trained by L_ID alone",
                ("--config.loss.sr_weight=0", NO_PS)),
            Row("SR + ID", (NO_PS,)),
            Row("SR + ID + PS", (), full_model=True),
            Row("extra: ID without an SR network (bilinear up-sampling)",
                ("--config.model.sr_module=none", "--config.loss.sr_weight=0",
                 NO_PS)),
        )),
    "III": Table(
        "SR quality of VDSR-CA per supervision, on the test queries",
        MLR_CUHK03, "sr", (
            Row("Solo SR: VDSR-CA trained by L_SR alone",
                ("--config.loss.id_weight=0", NO_PS)),
            Row("SR + ID", (NO_PS,)),
            Row("SR + ID + PS", (), full_model=True),
        )),
    "IV": Table(
        "SR modules in front of ResNet-50, trained jointly by L_SR + L_ID",
        MLR_CUHK03, "reid", tuple(
            Row(f"ResNet-50 + {label}",
                (f"--config.model.sr_module={module}", NO_PS,
                 "--config.student_init=imagenet"), teacher=NONE)
            for module, label in _SR_MODULES) + (
            Row("extra: ResNet-50 + VDSR-CA, pseudo-siamese (a ResNet-50 "
                "teacher and L_PS)", ("--config.model.sr_module=vdsr_ca",)),),
        common=("--config.model.backbone=resnet50",)),
    "V": Table(
        "Pooling of HRNet-ReID's branches, on HR data", HR, "hr", tuple(
            Row(f"pooling {name}", (f"--config.model.pooling={mode}",),
                teacher=OWN, full_model=mode == "avgmax")
            for mode, name in (("avg", "AAP"), ("max", "AMP"),
                               ("avgmax", "AAP + AMP"))),
        common=("--config.hr_only=True",)),
    "VI": Table(
        "Representation head of HRNet-W32, on HR data", HR, "hr", (
            Row("HRNet-W32-C (its ImageNet head)",
                ("--config.model.head=imagenet",), teacher=OWN),
            Row("HRNet-ReID", ("--config.model.head=reid",), teacher=OWN,
                full_model=True),
        ), common=("--config.hr_only=True",)),
    "VII": Table(
        "Outputs compared by L_PS", MLR_CUHK03, "reid", (
            Row("{Seq5, l_c}", ("--config.loss.ps_features=('seq5','logits')",)),
            Row("all six {Seq1..Seq5, l_c}", (
                "--config.loss.ps_features=('seq1','seq2','seq3','seq4',"
                "'seq5','logits')",)),
            Row("{Seq1, Seq4, Seq5, l_c}", (
                "--config.loss.ps_features=('seq1','seq4','seq5','logits')",),
                full_model=True),
        )),
}
DEFAULT = Table("The default model", ("configs/demo.py",), "reid",
                (Row("default", ()),))

# SPEC 6: the paper's figures for the full model, by benchmark.
PAPER = {"mlr_market1501": (91.5, 96.7, 97.9), "mlr_cuhk03": (92.6, 98.3, 99.4),
         "mlr_viper": (48.7, 73.4, 81.7), "mlr_dukemtmc": (82.3, 90.5, 92.8),
         "caviar": (48.2, 84.5, 96.3)}  # Rank-1/5/10
PAPER_HR = {"market1501": (94.4, 84.1), "dukemtmc": (87.0, 74.3)}  # R1, mAP
PAPER_SR = {"mlr_cuhk03": (26.1, 0.91)}  # PSNR, SSIM
COLUMNS = {
    "reid": (("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"),
             ("mAP", "mAP")),
    "hr": (("rank1", "Rank-1"), ("mAP", "mAP")),
    "sr": (("psnr_y", "PSNR Y"), ("ssim_y", "SSIM Y"),
           ("psnr_rgb", "PSNR RGB"), ("ssim_rgb", "SSIM RGB")),
}


def shell(flag: str) -> str:
  """`flag` as typed in a shell: a value with brackets or quotes quoted."""
  key, _, value = flag.partition("=")
  return f'{key}="{value}"' if any(c in value for c in "()' ,") else flag


def command(flags: Sequence[str]) -> str:
  return " ".join(shell(f) for f in flags)


def markdown() -> str:
  """docs/ablations.md: every table's rows, with their flags."""
  lines = [
      "# The paper's ablations", "",
      "Written by `python scripts/reproduce.py --markdown > docs/ablations.md`"
      " from the rows the script runs (tests/test_reproduce.py fails when"
      " this file is not current); do not edit it by hand.", "",
      "`python scripts/reproduce.py --table=N` (N: II to VII) runs a table's"
      " rows on the benchmark config(s) the paper reports it on, listed"
      " below (add `--config.data.root=...` and `--config.init_from=...` as"
      " for the main command), or on the config `--config` names, e.g."
      " `--config=configs/demo.py`. Any other `--config.*` flag passes"
      " through to every row. `--dry_run` prints one line per row: its"
      " name, config and exact flags, and runs nothing. Each row is the main"
      " command with the flags below in `--workdir` (default"
      " `workdirs/table_N`); rows marked \"the table's teacher\" differ in"
      " phase 2 only and share one phase-1 teacher, trained once. A"
      " finished row is skipped and a stopped one resumes, so a killed"
      " table continues where it stopped. It writes `table_N.md` and"
      " `table_N.json`, beside the paper's figure where docs/SPEC.md gives"
      " one (SPEC 6: the full model only). `--splits=10` trains and"
      " evaluates `data.split_index` 0..9 and reports mean ± std, the"
      " protocol of MLR-VIPeR, CAVIAR and MLR-CUHK03; `--seeds=2` trains"
      " every row (and its teacher) with seeds 0 and 1 and reports mean ±"
      " std over them.", "",
      "SPEC records the benchmarks of Table III (MLR-CUHK03) and Tables V"
      " and VI (Market-1501 and DukeMTMC-reID, HR images only), not those of"
      " Tables II, IV and VII: those default to MLR-CUHK03, Table III's."
      " Rows named \"extra:\" are not in the paper's table; they are run"
      " and reported with it, labelled."]
  for name, table in TABLES.items():
    lines += ["", f"## Table {name}: {table.title}", "",
              "Config" + ("s" if len(table.configs) > 1 else "") + ": "
              + ", ".join(f"`{c}`" for c in table.configs) + ". Figures: "
              + ", ".join(t for _, t in COLUMNS[table.report]) + "."
              + (f" Every row adds `{command(table.common)}`."
                 if table.common else ""), "",
              "| row | flags added to the main command | phase-1 teacher |",
              "|---|---|---|"]
    for row in table.rows:
      flags = (*table.common, *row.overrides)
      cell = f"`{command(flags)}`" if flags else "(none: the full model)"
      lines.append(f"| {row.name} | {cell} | {TEACHER_WORDS[row.teacher]} |")
  srcnn = TABLES["IV"].rows[1]
  solo = TABLES["III"].rows[0]
  lines += [
      "", "## Single rows", "",
      "A row is the main command with its flags. Table IV's SRCNN row on"
      " MLR-CUHK03 (phase 2 alone, from torchvision's ImageNet ResNet-50,"
      " then evaluation), and Table III's Solo SR row (VDSR-CA trained by"
      " L_SR alone: no L_ID, no L_PS, so no teacher; `results.json`'s `sr`"
      " holds its PSNR/SSIM in both conventions):", "",
      "```bash",
      "python -m pshrnet_jax.convert --kind=resnet50"
      " --input=resnet50-0676ba61.pth --output=weights/resnet50",
      "for mode in phase2 eval; do",
      "  python -m pshrnet_jax.main --config=configs/mlr_cuhk03.py"
      " --workdir=workdirs/cuhk03_resnet50_srcnn \\",
      "    --config.data.root=/data/cuhk03_release"
      " --config.init_from=weights/resnet50 \\",
      "    " + command((*TABLES["IV"].common, *srcnn.overrides))
      + " --config.mode=$mode",
      "done",
      "for mode in phase2 eval; do",
      "  python -m pshrnet_jax.main --config=configs/mlr_cuhk03.py"
      " --workdir=workdirs/cuhk03_solo_sr \\",
      "    --config.data.root=/data/cuhk03_release"
      " --config.init_from=weights/hrnet_w32 \\",
      "    " + command(solo.overrides) + " --config.mode=$mode",
      "done",
      "```", "",
      "## On the demo", "",
      "Every table runs on the built-in synthetic set (`configs/demo.py`:"
      " on a 2-core CPU its phase 1 takes about 3 minutes and phase 2"
      " about 5, docs/benchmarks.md), from random weights: the demo has no"
      " ImageNet weights, so Table IV's rows (phase 2 alone) train their"
      " ResNet-50 from scratch. The demo's ablation networks are narrow"
      " (configs/demo.py). Figures measured on the demo go to"
      " docs/benchmarks.md with their machine and seeds.", "",
      "```bash"] + [
          f"python scripts/reproduce.py --table={name} --config=configs/demo.py"
          + (" --seeds=2" if name == "II" else "")
          + f" --workdir=workdirs/demo_table_{name}" for name in TABLES] + [
      "```"]
  return "\n".join(lines) + "\n"


