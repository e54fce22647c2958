"""scripts/reproduce.py: each table's rows are the paper's, docs/ablations.md
is what the script runs, and a table runs each row as its teacher mode says.
"""

import json
import os
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from pshrnet_jax import config_checks
from scripts import reproduce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The paper's tables as its text describes them (docs/SPEC.md sections 3, 6;
# issue 21), written here by hand and not read from the script: the
# benchmark configs, then per row its name, the settings it changes
# (config key -> value) and its phase-1 teacher.
CUHK03 = ["configs/mlr_cuhk03.py"]
HR = ["configs/hr_market1501.py", "configs/hr_dukemtmc.py"]
SHARED, NONE, OWN = ("the table's teacher", "none (phase 2 only)",
                     "its own (mode=all)")
NO_PS = {"loss.ps_weight": 0}
RESNET_JOINT = {"model.backbone": "resnet50", "loss.ps_weight": 0,
                "student_init": "imagenet"}
SIX = ("seq1", "seq2", "seq3", "seq4", "seq5", "logits")
PAPER_TABLES = {
    # Supervision: the student keeps VDSR-CA; L_SR and L_PS switched off.
    "II": (CUHK03, [
        ("ID: VDSR-CA trained by L_ID alone",
         {"loss.sr_weight": 0, **NO_PS}, SHARED),
        ("SR + ID", NO_PS, SHARED),
        ("SR + ID + PS", {}, SHARED),
        ("extra: ID without an SR network (bilinear up-sampling)",
         {"model.sr_module": "none", "loss.sr_weight": 0, **NO_PS}, SHARED)]),
    # SR quality per supervision; Solo SR is L_SR alone.
    "III": (CUHK03, [
        ("Solo SR: VDSR-CA trained by L_SR alone",
         {"loss.id_weight": 0, **NO_PS}, SHARED),
        ("SR + ID", NO_PS, SHARED),
        ("SR + ID + PS", {}, SHARED)]),
    # SR modules before ResNet-50, joint SR + ID: no teacher, no L_PS.
    "IV": (CUHK03, [
        ("ResNet-50 + bicubic up-sampling",
         {**RESNET_JOINT, "model.sr_module": "bicubic"}, NONE),
        ("ResNet-50 + SRCNN", {**RESNET_JOINT, "model.sr_module": "srcnn"},
         NONE),
        ("ResNet-50 + VDSR", {**RESNET_JOINT, "model.sr_module": "vdsr"},
         NONE),
        ("ResNet-50 + RCAN", {**RESNET_JOINT, "model.sr_module": "rcan"},
         NONE),
        ("ResNet-50 + VDSR-CA",
         {**RESNET_JOINT, "model.sr_module": "vdsr_ca"}, NONE),
        ("extra: ResNet-50 + VDSR-CA, pseudo-siamese (a ResNet-50 teacher "
         "and L_PS)", {"model.backbone": "resnet50",
                       "model.sr_module": "vdsr_ca"}, SHARED)]),
    # Pooling on HR Market-1501 and DukeMTMC-reID.
    "V": (HR, [
        ("pooling AAP", {"hr_only": True, "model.pooling": "avg"}, OWN),
        ("pooling AMP", {"hr_only": True, "model.pooling": "max"}, OWN),
        ("pooling AAP + AMP", {"hr_only": True, "model.pooling": "avgmax"},
         OWN)]),
    # HRNet-W32-C's ImageNet head vs HRNet-ReID, on HR data.
    "VI": (HR, [
        ("HRNet-W32-C (its ImageNet head)",
         {"hr_only": True, "model.head": "imagenet"}, OWN),
        ("HRNet-ReID", {"hr_only": True, "model.head": "reid"}, OWN)]),
    # Outputs compared by L_PS.
    "VII": (CUHK03, [
        ("{Seq5, l_c}", {"loss.ps_features": ("seq5", "logits")}, SHARED),
        ("all six {Seq1..Seq5, l_c}", {"loss.ps_features": SIX}, SHARED),
        ("{Seq1, Seq4, Seq5, l_c}",
         {"loss.ps_features": ("seq1", "seq4", "seq5", "logits")}, SHARED)]),
}


def _dry_run(capsys, *args):
  """`reproduce.py --dry_run` read back: [(row, config, flags, teacher)]."""
  reproduce.main(["--dry_run", *args])
  rows = []
  for line in capsys.readouterr().out.splitlines():
    if line.startswith("#"):
      continue
    name, config, flag_text, teacher = line.split(" | ")
    rows.append((name, config, shlex.split(flag_text),
                 teacher.removeprefix("phase 1: ")))
  return rows


def _parsed(config_file, flag_list):
  """The config the main command builds from these flags (its parser)."""
  argv = ["main", f"--config={os.path.join(REPO, config_file)}", *flag_list]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


def _get(config, dotted):
  for name in dotted.split("."):
    config = config[name]
  return tuple(config) if isinstance(config, (list, tuple)) else config


@pytest.mark.parametrize("table", sorted(PAPER_TABLES))
def test_dry_run_rows_are_the_papers(table, capsys):
  configs, rows = PAPER_TABLES[table]
  printed = _dry_run(capsys, f"--table={table}")
  assert [(n, c, t) for n, c, _, t in printed] == [
      (name, config, teacher) for config in configs
      for name, _, teacher in rows]
  for (name, config, flag_list, _), (_, changes, _) in zip(
      printed, [r for _ in configs for r in rows]):
    keys = [f.split("=", 1)[0].removeprefix("--config.") for f in flag_list]
    assert sorted(keys) == sorted(changes), name  # Each key once.
    # The flags set exactly the paper's values, on the paper's config and
    # on the demo's, and every such config passes the run's checks.
    for config_file in (config, "configs/demo.py"):
      parsed = _parsed(config_file, [*flag_list, "--config.init_from=none"])
      assert {k: _get(parsed, k) for k in changes} == changes, name
      config_checks.check_config(parsed)


def test_dry_run_on_the_demo_with_user_flags(capsys):
  printed = _dry_run(capsys, "--table=V", "--config=configs/demo.py",
                     "--config.seed=3")
  assert [(n, c) for n, c, _, _ in printed] == [
      (name, "configs/demo.py") for name, _, _ in PAPER_TABLES["V"][1]]
  # The table's flags, then the user's, then the row's (which win).
  assert printed[0][2] == ["--config.hr_only=True", "--config.seed=3",
                           "--config.model.pooling=avg"]


def test_ablations_doc_is_what_reproduce_writes():
  with open(os.path.join(REPO, "docs", "ablations.md")) as f:
    written = f.read()
  assert written == reproduce.markdown(), (
      "docs/ablations.md is stale: python scripts/reproduce.py --markdown "
      "> docs/ablations.md")


@pytest.mark.parametrize("table", sorted(PAPER_TABLES))
def test_doc_rows_typed_in_a_shell_are_the_rows_run(table, capsys):
  # The ps_features tuples need quotes in a shell; what the shell passes on
  # must be exactly the flags the row's main command gets.
  doc = reproduce.markdown().split(f"## Table {table}:")[1].split("##")[0]
  rows = []
  for line in doc.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) == 3 and cells[0] not in ("row", "---"):
      rows.append((cells[0], shlex.split(cells[1].strip("`"))
                   if cells[1].startswith("`") else [], cells[2]))
  printed = _dry_run(capsys, f"--table={table}")
  first = PAPER_TABLES[table][0][0]
  assert rows == [(n, f, t) for n, c, f, t in printed if c == first]


def _fake_main(calls):
  """Stands for the main command: records it, writes what it would."""

  def run(config, workdir, *flag_list):
    mode = next(f for f in flag_list if f.startswith("--config.mode="))
    calls.append((os.path.basename(workdir), mode.split("=")[1],
                  any(f.startswith("--config.teacher_dir=")
                      for f in flag_list)))
    if mode.endswith("phase1"):
      os.makedirs(os.path.join(workdir, "phase1", "teacher"))
    if mode.endswith(("eval", "all")):
      name = ("market1501" if "market" in config else "dukemtmc"
              if "duke" in config else "demo" if "demo" in config
              else "mlr_cuhk03")
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"dataset": name, "rank1": 50.0 + len(calls), "rank5": 1,
                   "rank10": 2, "mAP": 3.0, "sr": {
                       "psnr_y": 25.0, "ssim_y": 0.9, "psnr_rgb": 24.0,
                       "ssim_rgb": 0.85}}, f)
  return run


def test_each_teacher_mode_runs_what_it_says(tmp_path, monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(reproduce, "_main", _fake_main(calls))
  reproduce.main(["--table=IV", f"--workdir={tmp_path}"])
  # The paper's rows: phase 2 alone, no teacher; the extra row: a teacher
  # trained once, then phase 2 against it.
  keys = [r.key for r in reproduce.TABLES["IV"].rows]
  assert calls == [c for k in keys[:5] for c in (
      (k, "phase2", False), (k, "eval", False))] + [
          ("teacher", "phase1", False), (keys[5], "phase2", True),
          (keys[5], "eval", True)]
  calls.clear()
  with pytest.raises(SystemExit):  # The finished table is not written over...
    reproduce.main(["--table=IV", f"--workdir={tmp_path}"])
  assert "table_IV.md exists" in capsys.readouterr().err and calls == []
  reproduce.main(["--table=IV", f"--workdir={tmp_path}", "--overwrite"])
  assert calls == []  # ...and with --overwrite every row is finished.
  capsys.readouterr()
  # Table V: each row its own whole run, on each HR config in its folder.
  reproduce.main(["--table=V", f"--workdir={tmp_path / 'v'}"])
  assert [(k, m) for k, m, _ in calls] == [
      (r.key, "all") for _ in HR for r in reproduce.TABLES["V"].rows]
  assert os.path.exists(tmp_path / "v" / "hr_dukemtmc" / "pooling_aap"
                        / "results.json")
  text = capsys.readouterr().out
  assert "On market1501 (`configs/hr_market1501.py`):" in text
  assert "| pooling AAP + AMP | 53.00 | 3.00 | 94.4/84.1 |" in text
  assert "| pooling AAP + AMP | 56.00 | 3.00 | 87/74.3 |" in text
  assert "| pooling AAP | 51.00 | 3.00 | - |" in text
  with open(tmp_path / "v" / "table_V.json") as f:
    assert [s["benchmark"] for s in json.load(f)["sections"]] == [
        "market1501", "dukemtmc"]


def test_table_iii_reports_both_sr_conventions(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(reproduce, "_main", _fake_main([]))
  reproduce.main(["--table=III", f"--workdir={tmp_path}"])
  text = capsys.readouterr().out
  assert ("| row | PSNR Y | SSIM Y | PSNR RGB | SSIM RGB | paper PSNR/SSIM |"
          in text)
  assert "| SR + ID + PS | 25.00 | 0.9000 | 24.00 | 0.8500 | 26.1/0.91 |" in text
  assert "| Solo SR: VDSR-CA trained by L_SR alone | 25.00 |" in text


def test_split_driver_averages_the_splits():
  stub = [{"rank1": 40.0, "rank5": 70.0, "rank10": 80.0, "mAP": 30.0},
          {"rank1": 50.0, "rank5": 74.0, "rank10": 90.0, "mAP": 36.0},
          {"rank1": 60.0, "rank5": 78.0, "rank10": 85.0, "mAP": 33.0}]
  out = reproduce.aggregate_splits(stub)
  assert out == {"runs": 3, "rank1": 50.0, "rank1_std": 8.16,
                 "rank5": 74.0, "rank5_std": 3.27, "rank10": 85.0,
                 "rank10_std": 4.08, "mAP": 33.0, "mAP_std": 2.45}
  ssim = reproduce.aggregate_splits([{"ssim_y": 0.9}, {"ssim_y": 0.8}])
  assert ssim == {"runs": 2, "ssim_y": 0.85, "ssim_y_std": 0.05}


def test_seeds_train_each_row_per_seed_and_report_the_spread(
    tmp_path, monkeypatch, capsys):
  flags_seen, fake = [], _fake_main([])
  monkeypatch.setattr(reproduce, "_main", lambda c, w, *f: (
      flags_seen.append((os.path.relpath(w, tmp_path), f)), fake(c, w, *f)))
  reproduce.main(["--table=II", "--config=configs/demo.py", "--seeds=2",
                  f"--workdir={tmp_path}"])
  # A teacher per seed, trained with that seed; every row per seed.
  teachers = [(w, f) for w, f in flags_seen if w.startswith("teacher")]
  assert teachers == [
      (f"teacher/seed_{n}", (f"--config.seed={n}", "--config.mode=phase1"))
      for n in (0, 1)]
  rows = reproduce.TABLES["II"].rows
  assert {w for w, _ in flags_seen} == {
      f"{k}/seed_{n}" for k in ["teacher"] + [r.key for r in rows]
      for n in (0, 1)}
  # Rank-1 of the fake runs: 50 + the call count at each evaluation; row 3
  # is evaluated at calls 12 (seed 0) and 14 (seed 1): 62 and 64.
  text = capsys.readouterr().out
  assert "| SR + ID + PS | 63.00 ± 1.00 | 1.00 ± 0.00 |" in text
