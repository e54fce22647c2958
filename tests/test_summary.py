"""The summary CLI: JSON and table output, through main and a subprocess."""

import json
import os
import subprocess
import sys

from absl import flags
import pytest

import fixtures_data
from data_pipelines import summary

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flag_values(argv):
  fv = flags.FlagValues()
  summary.define_flags(fv)
  fv(["summary"] + argv)
  return fv


def test_json_through_a_subprocess(tmp_path):
  root = fixtures_data.make_viper(str(tmp_path / "VIPeR"), num=6)
  result = subprocess.run(
      [sys.executable, "-m", "data_pipelines.summary", "--dataset=mlr_viper",
       f"--root={root}", f"--build_dir={tmp_path / 'b'}", "--split_index=2",
       "--json"],
      cwd=_REPO, capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout)
  assert out["dataset"] == "mlr_viper" and out["protocol"] == "single_shot"
  assert out["split_index"] == 2 and out["skipped_unreadable"] == 0
  splits = out["splits"]
  assert {k: splits["train"][k] for k in
          ("images", "identities", "cameras", "camera_ids")} == {
              "images": 6, "identities": 3, "cameras": 2, "camera_ids": [0, 1]}
  assert {k: splits["query"][k] for k in ("images", "identities",
                                          "camera_ids")} == {
                                              "images": 3, "identities": 3,
                                              "camera_ids": [1]}
  assert "lr_factors" not in splits["gallery"]
  assert splits["gallery"]["camera_ids"] == [0]
  # The factor counts are the manifest's: query = camera B images of the
  # test identities, train = every other LR image.
  with open(os.path.join(out["build"], "manifest.json")) as f:
    manifest = json.load(f)
  test = set(manifest["identities"]["query"])
  expected = {"train": {}, "query": {}}
  for rel, entry in manifest["lr_images"].items():
    split = ("query" if rel.startswith("cam_b/") and int(rel[6:9]) in test
             else "train")
    factor = str(entry["factor"])
    expected[split][factor] = expected[split].get(factor, 0) + 1
  assert splits["train"]["lr_factors"] == expected["train"]
  assert splits["query"]["lr_factors"] == expected["query"]
  assert sum(expected["query"].values()) == 3


def test_main_prints_json_and_table(tmp_path, capsys):
  root = fixtures_data.make_market(str(tmp_path / "market"))
  argv = ["--dataset=market1501", f"--root={root}",
          f"--build_dir={tmp_path / 'b'}"]
  summary.main(["summary"], _flag_values(argv + ["--json"]))
  out = json.loads(capsys.readouterr().out)
  assert out["splits"] == {
      "train": {"images": 5, "identities": 2, "cameras": 4,
                "camera_ids": [0, 1, 2, 5]},
      "query": {"images": 2, "identities": 2, "cameras": 2,
                "camera_ids": [0, 1]},
      "gallery": {"images": 4, "identities": 3, "cameras": 3,
                  "camera_ids": [0, 1, 4]},
  }
  summary.main(["summary"], _flag_values(argv))
  table = capsys.readouterr().out.splitlines()
  assert table[0] == "market1501 (multi_shot)"
  assert table[-3].split() == ["train", "5", "2", "4", "-"]
  assert table[-1].split() == ["gallery", "4", "3", "3", "-"]


def test_main_options_and_factor_column(tmp_path, capsys):
  root = fixtures_data.make_market(str(tmp_path / "market"))
  fv = _flag_values(["--dataset=mlr_market1501", f"--root={root}",
                     f"--build_dir={tmp_path / 'b'}",
                     "--option=lr_query_cameras=[0]", "--json"])
  summary.main(["summary"], fv)
  out = json.loads(capsys.readouterr().out)
  assert out["splits"]["query"]["camera_ids"] == [0]
  assert sum(out["splits"]["query"]["lr_factors"].values()) == 1
  assert sum(out["splits"]["train"]["lr_factors"].values()) == 5


def test_main_reports_bad_input_in_one_line(tmp_path, capsys):
  fv = _flag_values(["--dataset=mlr_viper", f"--root={tmp_path / 'none'}",
                     f"--build_dir={tmp_path / 'b'}"])
  with pytest.raises(SystemExit) as info:
    summary.main(["summary"], fv)
  assert info.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith("error: Dataset root ") and "does not exist" in err
  assert "cam_a/" in err
