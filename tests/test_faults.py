"""Faults and hostile input, second pass (docs/reliability.md's table).

In this process: config files the main command cannot use, outputs that
must not be written over (commands' files, workdirs of someone else), damaged
features files, decompression bombs, builds of two copies of one dataset,
training identities that are also tested, damaged variables. Real commands
(a module fixture running them side by side): extract and search refusing
and skipping, and what reaches the terminal.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import fixtures_data
import tiny_setup as tiny
from data_pipelines import atomic
from data_pipelines import benchmarks
from data_pipelines.builders import mlr
from data_pipelines.pipeline import transforms
from pshrnet_jax import driver
from pshrnet_jax import errors
from pshrnet_jax import load_model
from pshrnet_jax import main as main_command
from pshrnet_jax import workdir_layout
from pshrnet_jax.inference import gallery
from scripts import reproduce


def _fatal_lines(text):
  return [l for l in text.splitlines() if l.startswith("FATAL ")]


# --- Config files: one FATAL line each (the main command's own check).

_CONFIG_FILES = {
    "missing": ("configs/nonexistent.py", None,
                ["configs/nonexistent.py does not exist"]),
    "syntax": ("SYNTAX", "def get_config(:\n", ["syntax error", "line 1"]),
    "no_get_config": ("NOGET", "x = 1\n", ["defines no get_config()"]),
    "unknown_preset": ("configs/demo.py:bogus", None,
                       ["get_config('bogus') failed", "Unknown preset "
                        "'bogus'", "'paper', 'released_code'"]),
}


@pytest.mark.parametrize("case", sorted(_CONFIG_FILES))
def test_config_file_problems_are_one_fatal_line(case, tmp_path, capsys,
                                                 monkeypatch):
  monkeypatch.chdir(tiny.REPO)
  arg, text, words = _CONFIG_FILES[case]
  if text is not None:
    path = tmp_path / f"{arg.lower()}.py"
    path.write_text(text)
    arg = str(path)
  with pytest.raises(SystemExit) as info:
    main_command._check_config_file(["main", f"--config={arg}"])
  assert info.value.code == 1
  fatal = _fatal_lines(capsys.readouterr().err)
  assert len(fatal) == 1 and f"--config={arg}:" in fatal[0], fatal
  for word in words:
    assert word in fatal[0], (word, fatal[0])


def test_a_good_config_file_passes_the_check(monkeypatch):
  monkeypatch.chdir(tiny.REPO)
  main_command._check_config_file(
      ["main", "--config=configs/mlr_cuhk03.py:released_code"])


# --- Nothing a user owns is written over.

def test_refuse_to_clobber_and_atomic_file(tmp_path):
  out = tmp_path / "gallery.npz"
  atomic.refuse_to_clobber(out, overwrite=False)  # Nothing there yet.
  out.write_text("mine")
  with pytest.raises(FileExistsError, match=r"--out=.*gallery.npz exists; "
                     r"refusing to overwrite it \(pass --overwrite"):
    atomic.refuse_to_clobber(out, overwrite=False)
  atomic.refuse_to_clobber(out, overwrite=True)
  with pytest.raises(FileExistsError, match="is a folder; expected a file"):
    atomic.refuse_to_clobber(tmp_path, overwrite=True)
  with pytest.raises(FileExistsError, match="is a file; expected a folder"):
    atomic.refuse_to_clobber(out, overwrite=True, folder=True)
  atomic.refuse_to_clobber(tmp_path / "new", overwrite=False, folder=True)
  # A failure while writing leaves the old file and no temporary.
  with pytest.raises(RuntimeError):
    with atomic.atomic_file(out) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("disk gone")
  assert out.read_text() == "mine" and os.listdir(tmp_path) == [out.name]
  with atomic.atomic_file(out) as tmp:
    with open(tmp, "w") as f:
      f.write("new")
  assert out.read_text() == "new" and os.listdir(tmp_path) == [out.name]


def test_workdirs_are_recognised_by_their_marker_or_config(tiny_trained,
                                                           tmp_path):
  trained = tiny_trained["workdir"]
  assert os.path.isfile(os.path.join(trained, workdir_layout.MARKER_FILE))
  # A workdir written before the marker existed: its config.json says so.
  legacy = tiny.copy_workdir(trained, tmp_path)
  os.remove(os.path.join(legacy, workdir_layout.MARKER_FILE))
  driver.check_workdir(legacy)
  # Empty folders hold nothing to lose (a build that failed leaves data/).
  os.makedirs(tmp_path / "empty" / "data")
  driver.check_workdir(str(tmp_path / "empty"))
  # Anything else is someone's.
  os.remove(os.path.join(legacy, workdir_layout.CONFIG_FILE))
  with pytest.raises(errors.ConfigError, match="not a workdir of this "
                     "project"):
    driver.check_workdir(legacy)


def test_reproduce_refuses_bad_splits_and_a_finished_table(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    reproduce.main(["--splits=-3", f"--workdir={tmp_path}"])
  assert info.value.code == 2
  assert "--splits=-3: expected a number of splits >= 1" in (
      capsys.readouterr().err)
  (tmp_path / "table_II.md").write_text("my edited table")
  with pytest.raises(SystemExit) as info:
    reproduce.main(["--table=II", f"--workdir={tmp_path}"])
  assert info.value.code == 2
  assert re.search(r"table_II.md exists; refusing to overwrite",
                   capsys.readouterr().err)
  assert (tmp_path / "table_II.md").read_text() == "my edited table"
  assert os.listdir(tmp_path) == ["table_II.md"]  # No row was started.


# --- Features files and query folders.

def _write_features(path, features, paths):
  meta = {"format": gallery.FEATURES_FORMAT, "fingerprint": "f"}
  np.savez(path, features=features, paths=np.array(paths, dtype=str),
           meta=np.array(json.dumps(meta)))
  return str(path)


@pytest.mark.parametrize("features,paths,words", [
    (np.array([[1.0, 0.0], [np.nan, 0.0]], np.float32), ["a", "b"],
     "non-finite features in 1 row(s) (of b)"),
    (np.eye(3, dtype=np.float32), ["a", "b"], "3 feature rows for 2 paths"),
    (np.zeros((0, 4), np.float32), [], "features of shape (0, 4)"),
    (np.array(["x"]), ["a"], "features of shape (1,)"),
])
def test_a_damaged_features_file_is_refused(features, paths, words,
                                            tmp_path):
  path = _write_features(tmp_path / "g.npz", features, paths)
  with pytest.raises(errors.ConfigError) as info:
    gallery.load_features(path, "f")
  assert "g.npz is damaged" in str(info.value)
  assert words in str(info.value), str(info.value)


def test_a_query_folder_is_searched_not_missing(tmp_path):
  fixtures_data.write_image(str(tmp_path / "q" / "b.png"), (8, 16), 0)
  fixtures_data.write_image(str(tmp_path / "q" / "a.jpg"), (8, 16), 1)
  fixtures_data.write_image(str(tmp_path / "one.png"), (8, 16), 2)
  assert gallery.list_images([str(tmp_path / "one.png"),
                              str(tmp_path / "q")]) == [
      str(tmp_path / "one.png"), str(tmp_path / "q" / "a.jpg"),
      str(tmp_path / "q" / "b.png")]
  with pytest.raises(errors.DatasetNotFoundError,
                     match="not found: .*nothere"):
    gallery.list_images([str(tmp_path / "q"), str(tmp_path / "nothere")])


# --- Images PIL refuses to decode: its decompression-bomb limit.

def write_bomb(path, width=30000, height=30000):
  """A 60-byte PNG whose header declares width x height pixels: more than
  2 x PIL's Image.MAX_IMAGE_PIXELS, which PIL refuses on opening."""

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))

  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                         0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
  assert width * height > 2 * Image.MAX_IMAGE_PIXELS
  return path


def test_a_decompression_bomb_is_unreadable_and_skippable(tmp_path):
  bomb = write_bomb(str(tmp_path / "bomb.png"))
  with pytest.raises(errors.UnreadableImageError,
                     match=r"bomb\.png.*decompression bomb"):
    transforms.decode_image(bomb)
  root = fixtures_data.make_market(str(tmp_path / "market"))
  name = "0007_c6s2_000771_01.jpg"
  write_bomb(os.path.join(root, "bounding_box_train", name))
  with pytest.raises(errors.UnreadableImageError, match=name):
    benchmarks.prepare_benchmark("mlr_market1501", root,
                                 build_dir=str(tmp_path / "b"))
  built = benchmarks.prepare_benchmark(
      "mlr_market1501", root, build_dir=str(tmp_path / "b"),
      options={"skip_unreadable": True})
  assert built.manifest["skipped_unreadable"] == [
      f"bounding_box_train/{name}"]
  assert len(built.benchmark.train) == 4


# --- Builds of two copies of one dataset; identities in train and test.

def test_two_folder_datasets_get_two_builds(tmp_path):
  build_dir = str(tmp_path / "builds")
  first = fixtures_data.make_folder(str(tmp_path / "first"))
  second = fixtures_data.make_folder(str(tmp_path / "second"))
  # Same names, other pixels: a shared build would hand out the first
  # copy's LR images for the second.
  for root, _, names in os.walk(second):
    for n in names:
      if n.endswith(".jpg"):
        fixtures_data.write_image(os.path.join(root, n),
                                  fixtures_data.FOLDER_SIZE, 99)
  a = benchmarks.prepare_benchmark("folder", first, build_dir=build_dir)
  b = benchmarks.prepare_benchmark("folder", second, build_dir=build_dir)
  assert a.path != b.path and sorted(os.listdir(build_dir)) == sorted(
      os.path.basename(p) for p in (a.path, b.path))
  for record in b.benchmark.train:
    assert record.lr_path.startswith(b.path + os.sep)
    with Image.open(record.hr_path) as hr, Image.open(record.lr_path) as lr:
      expected = np.asarray(mlr.downsample(
          hr.convert("RGB"), record.lr_factor))
      np.testing.assert_array_equal(np.asarray(lr.convert("RGB")), expected)


def test_training_identities_in_the_test_split_are_warned_about(tmp_path):
  files = {k: list(v) for k, v in fixtures_data.MARKET_FILES.items()}
  files["bounding_box_train"].append("0003_c4s1_000551_01.jpg")
  root = fixtures_data.make_market(str(tmp_path / "market"), files)
  with tiny.capture_logs() as logs:
    benchmarks.prepare_benchmark("mlr_market1501", root,
                                 build_dir=str(tmp_path / "b"))
  assert ("mlr_market1501: 1 training identities also appear in the query "
          "or gallery split (3)") in logs.text


# --- Damaged variables: one error, not Orbax's tracebacks.

def test_damaged_variables_are_one_error(tiny_trained, tmp_path):
  student = os.path.join(tiny_trained["workdir"], "phase2", "student")
  damaged = str(tmp_path / "student")
  shutil.copytree(student, damaged)
  for root, _, names in os.walk(damaged):
    for name in names:
      path = os.path.join(root, name)
      if "/d/" in path:
        with open(path, "r+b") as f:
          f.truncate(8)
  with pytest.raises(errors.UnreadableVariablesError,
                     match=r"student: the saved variables cannot be read"):
    load_model(damaged)
