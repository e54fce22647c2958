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


# Orbax's event-loop noise after the failed read of damaged variables,
# reported when collected, during whichever test runs then (the commands
# keep it off the terminal: console.route_logs).
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


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
  damaged = tiny.damaged_copy(
      os.path.join(tiny_trained["workdir"], "phase2", "student"),
      str(tmp_path / "student"))
  with pytest.raises(errors.UnreadableVariablesError,
                     match=r"student: the saved variables cannot be read"):
    load_model(damaged)


# --- Real commands: refusals, skipped images, and what reaches the terminal.

_COMMANDS = {
    # (module, flags with WORKDIR, PHOTOS, OUT, DAMAGED substituted)
    "extract_out_exists": ("extract", ["--model=WORKDIR", "--images=PHOTOS",
                                       "--out=OUT/mine.npz"]),
    "extract_skips_a_bomb": ("extract", ["--model=WORKDIR", "--images=PHOTOS",
                                         "--out=OUT/gallery.npz"]),
    "search_top_k_zero": ("search", ["--model=WORKDIR", "--query=PHOTOS",
                                     "--gallery=PHOTOS", "--top_k=0"]),
    "search_damaged_model": ("search", ["--model=DAMAGED", "--query=PHOTOS",
                                        "--gallery=PHOTOS"]),
    "search_out_exists": ("search", ["--model=WORKDIR", "--query=PHOTOS",
                                     "--gallery=PHOTOS", "--out=OUT"]),
    "export_out_exists": ("export", ["--model=WORKDIR", "--out=OUT"]),
}


@pytest.fixture(scope="module")
def commands(tiny_trained, tiny_source, tmp_path_factory):
  """Runs every command of _COMMANDS at once; {case: (returncode, stdout,
  stderr, OUT, log folder)}."""
  base = tmp_path_factory.mktemp("commands")
  photos = base / "photos"
  photos.mkdir()
  test_dir = os.path.join(tiny_source, "bounding_box_test")
  for name in sorted(os.listdir(test_dir))[:2]:
    shutil.copy(os.path.join(test_dir, name), photos / name)
  write_bomb(str(photos / "bomb.png"))
  (photos / "corrupt.jpg").write_bytes(b"not an image")
  damaged = tiny.damaged_copy(
      os.path.join(tiny_trained["workdir"], "phase2", "student"),
      str(base / "damaged"))
  procs = {}
  for case, (module, flags) in _COMMANDS.items():
    out, logs = base / case, base / f"{case}_logs"
    out.mkdir()
    if case == "extract_out_exists":
      (out / "mine.npz").write_text("my features")
    if case in ("search_out_exists", "export_out_exists"):
      (out / "search.json").write_text("my search")
    args = [f.replace("WORKDIR", tiny_trained["workdir"])
            .replace("PHOTOS", str(photos)).replace("OUT", str(out))
            .replace("DAMAGED", damaged) for f in flags]
    procs[case] = (out, logs, subprocess.Popen(
        [sys.executable, "-m", f"pshrnet_jax.{module}", *args],
        cwd=tiny.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, JAX_PLATFORMS="cpu",
                            PSHRNET_JAX_LOG_DIR=str(logs))))
  results = {}
  for case, (out, logs, proc) in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    results[case] = (proc.returncode, stdout, stderr, out, logs)
  return results


def _one_fatal(result, *words):
  returncode, _, stderr, _, _ = result
  assert returncode == 1, stderr[-3000:]
  fatal = _fatal_lines(stderr)
  assert len(fatal) == 1 and "Traceback" not in stderr, stderr[-3000:]
  for word in words:
    assert word in fatal[0], (word, fatal[0])


def test_extract_refuses_to_overwrite_a_file(commands):
  result = commands["extract_out_exists"]
  _one_fatal(result, "mine.npz exists; refusing to overwrite it",
             "--overwrite")
  out = result[3]
  assert os.listdir(out) == ["mine.npz"]  # Unchanged, no temporary.
  assert (out / "mine.npz").read_text() == "my features"


def test_extract_lists_a_bomb_and_keeps_library_logs_off_the_terminal(
    commands):
  returncode, stdout, stderr, out, logs = commands["extract_skips_a_bomb"]
  assert returncode == 0, stderr[-3000:]
  assert re.search(r"skipped .*bomb\.png: .*decompression bomb", stdout)
  assert re.search(r"skipped .*corrupt\.jpg", stdout)
  assert "2 images -> " in stdout and "2 skipped" in stdout
  _, paths, _ = gallery.load_features(str(out / "gallery.npz"))
  photos = out.parent / "photos"
  assert paths == [str(photos / n) for n in sorted(os.listdir(photos))
                   if n.endswith(".jpg") and n != "corrupt.jpg"]
  assert os.listdir(out) == ["gallery.npz"]
  # Orbax's INFO records are in the log file, not on the terminal.
  assert "Closing _NonBlockingMetadataStore" not in stderr + stdout
  assert " I " not in stderr, stderr[-2000:]
  with open(logs / "extract.log") as f:
    assert "Closing _NonBlockingMetadataStore" in f.read()


def test_search_refuses_top_k_zero(commands):
  _one_fatal(commands["search_top_k_zero"], "--top_k=0",
             "not a positive integer")


def test_search_on_a_damaged_model_is_one_line(commands):
  result = commands["search_damaged_model"]
  _one_fatal(result, "UnreadableVariablesError", "damaged",
             "the saved variables cannot be read")
  assert len(result[2].splitlines()) == 1, result[2][-3000:]


def test_search_refuses_to_overwrite_its_report(commands):
  result = commands["search_out_exists"]
  _one_fatal(result, "search.json exists; refusing to overwrite it")
  assert os.listdir(result[3]) == ["search.json"]
  assert (result[3] / "search.json").read_text() == "my search"


def test_export_refuses_a_folder_that_holds_files(commands):
  result = commands["export_out_exists"]
  _one_fatal(result, "export_out_exists exists; refusing to overwrite it",
             "--overwrite")
  assert os.listdir(result[3]) == ["search.json"]


def test_finish_ends_a_process_a_stuck_thread_would_hold():
  code = ("import threading\n"
          "from pshrnet_jax import console\n"
          "threading.Thread(target=threading.Event().wait,"
          " name='stuck').start()\n"
          "console.finish(console.fatal('held'), grace_s=0.5)\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=tiny.REPO,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 1 and proc.stderr == "FATAL held\n"
