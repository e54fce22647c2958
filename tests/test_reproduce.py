"""scripts/reproduce.py: docs/ablations.md is its rows, splits average."""

import os
import shlex

import pytest

from scripts import reproduce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ablations_doc_is_what_reproduce_writes():
  with open(os.path.join(REPO, "docs", "ablations.md")) as f:
    written = f.read()
  assert written == reproduce.markdown(), (
      "docs/ablations.md is stale: python scripts/reproduce.py --markdown "
      "> docs/ablations.md")


def _doc_rows() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
  """The generated table read back: paper table -> [(row, shell-split flags)]."""
  rows = {}
  for line in reproduce.markdown().splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) != 4 or cells[0] in ("table", "---"):
      continue
    flags = tuple(shlex.split(cells[2].strip("`"))) if cells[2].startswith(
        "`") else ()
    rows.setdefault(cells[0], []).append((cells[1], flags))
  return rows


@pytest.mark.parametrize("table", sorted(reproduce.TABLES))
def test_doc_rows_typed_in_a_shell_are_the_rows_run(table):
  # The ps_features tuples need quotes in a shell; what the shell passes on
  # must be exactly the flags reproduce.py gives the main command.
  common = reproduce.COMMON.get(table, ())
  plan = [(r.name, (*common, *r.overrides)) for r in reproduce.TABLES[table]]
  assert plan == _doc_rows()[table]


def test_rows_share_a_teacher_only_when_phase1_is_the_same():
  # Pooling is part of the teacher; SR and PS settings only of phase 2.
  assert not any(r.shares_teacher for r in reproduce.TABLES["V"])
  for table in ("II", "IV", "VII"):
    for row in reproduce.TABLES[table]:
      assert row.shares_teacher
      assert not any(f.startswith("--config.model.pooling")
                     for f in row.overrides)


def test_split_driver_averages_the_splits():
  stub = [{"rank1": 40.0, "rank5": 70.0, "rank10": 80.0, "mAP": 30.0},
          {"rank1": 50.0, "rank5": 74.0, "rank10": 90.0, "mAP": 36.0},
          {"rank1": 60.0, "rank5": 78.0, "rank10": 85.0, "mAP": 33.0}]
  out = reproduce.aggregate_splits(stub)
  assert out == {"splits": 3, "rank1": 50.0, "rank1_std": 8.16,
                 "rank5": 74.0, "rank5_std": 3.27, "rank10": 85.0,
                 "rank10_std": 4.08, "mAP": 33.0, "mAP_std": 2.45}


def test_finished_rows_are_skipped_and_the_table_written(tmp_path,
                                                         monkeypatch):
  calls = []
  monkeypatch.setattr(reproduce, "_main",
                      lambda config, workdir, *flags: calls.append(workdir))
  rows = reproduce.TABLES["II"]
  for i, row in enumerate(rows):
    os.makedirs(tmp_path / row.key)
    (tmp_path / row.key / "results.json").write_text(
        '{"dataset": "mlr_cuhk03", "rank1": %d, "rank5": 1, "rank10": 2, '
        '"mAP": 3}' % (10 * i))
  entries = [reproduce.run_row(r, "configs/demo.py", str(tmp_path), [], None)
             for r in rows]
  assert calls == []  # Every row was finished: nothing ran again.
  text = reproduce.write_table(str(tmp_path), "II", rows, entries,
                               "mlr_cuhk03")
  assert "| ID only | 0.00 | 1.00 | 2.00 | 3.00 | - |" in text
  assert "| SR + ID + PS | 20.00 | 1.00 | 2.00 | 3.00 | 92.6/98.3/99.4 |" in text
  assert os.path.exists(tmp_path / "table_II.json")
  # Table IV's default row is VDSR-CA in front of ResNet-50, not the
  # PS-HRNet SPEC 6 reports: no paper figure beside it.
  rows = reproduce.TABLES["IV"]
  text = reproduce.write_table(str(tmp_path), "IV", rows,
                               [entries[0]] * len(rows), "mlr_cuhk03")
  assert "| ResNet-50 + VDSR-CA | 0.00 | 1.00 | 2.00 | 3.00 | - |" in text
