"""The package as pip installs it (pyproject.toml), used from another folder.

The project's files that a build reads are copied to a temporary folder (a
build writes build/ and *.egg-info beside its sources) and installed with
`pip install --no-deps --no-build-isolation --target`, so nothing is
downloaded: the dependencies are this test environment's. Then, from a
folder outside the repository, with only the installed copy on the path:
- every console script answers --help with its own flags;
- `pshrnet-train --config=configs/demo.py` (no such file there) loads the
  installed demo config and stops at a bad override, naming it, before
  anything is written;
- the modules imported are the installed ones, and the wheel holds the
  configs and no tests or scripts.
"""

import os
import shutil
import subprocess
import sys
from concurrent import futures

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_INPUTS = ("pyproject.toml", "README.md", "requirements.txt",
                "requirements-test.txt", "requirements-onnx.txt",
                "pshrnet_jax", "data_pipelines", "configs")
# Each console script and flags its --help must list (--model: the flag
# the search, extract and export commands share).
COMMANDS = {"pshrnet-train": ("--workdir",),
            "pshrnet-extract": ("--images", "--model"),
            "pshrnet-search": ("--gallery", "--model"),
            "pshrnet-export": ("--format", "--model"),
            "pshrnet-convert": ("--kind",),
            "pshrnet-data-summary": ("--dataset",)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(the install target, a folder outside the repository)."""
  base = tmp_path_factory.mktemp("packaging")
  source, target, elsewhere = base / "src", base / "target", base / "away"
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for name in BUILD_INPUTS:
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, source / name, ignore=ignore)
    else:
      os.makedirs(source, exist_ok=True)
      shutil.copy(path, source / name)
  elsewhere.mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
       "--no-build-isolation", "--no-index", "--target", str(target),
       str(source)], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return target, elsewhere


def _env(target) -> dict[str, str]:
  # The installed copy only: no PYTHONPATH of the repository, no cwd on it.
  return dict(os.environ, PYTHONPATH=str(target), JAX_PLATFORMS="cpu")


def _command(target, name: str, *args: str, cwd) -> subprocess.CompletedProcess:
  return subprocess.run([str(target / "bin" / name), *args], cwd=cwd,
                        env=_env(target), capture_output=True, text=True,
                        timeout=300)


def test_the_wheel_holds_the_packages_and_configs(installed):
  target, elsewhere = installed
  assert sorted(p for p in os.listdir(target)
                if not p.endswith(".dist-info")) == [
                    "bin", "configs", "data_pipelines", "pshrnet_jax"]
  assert (target / "configs" / "demo.py").is_file()
  code = ("import configs, data_pipelines, pshrnet_jax.main; "
          "print(configs.__file__, data_pipelines.__file__, "
          "pshrnet_jax.main.__file__, pshrnet_jax.__version__)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere,
                        env=_env(target), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  *paths, version = proc.stdout.split()
  assert all(p.startswith(str(target)) for p in paths), paths
  assert f"pshrnet_jax-{version}.dist-info" in os.listdir(target)


def test_each_console_script_lists_its_flags(installed):
  target, elsewhere = installed
  with futures.ThreadPoolExecutor(2) as pool:
    runs = dict(zip(COMMANDS, pool.map(
        lambda name: _command(target, name, "--help", cwd=elsewhere),
        COMMANDS)))
  for name, listed in COMMANDS.items():
    # absl's --help exits with status 1, as under `python -m`.
    assert "Traceback" not in runs[name].stderr, (name, runs[name].stderr)
    for flag in listed:
      assert f"  {flag}:" in runs[name].stdout, (name, flag,
                                                  runs[name].stdout[-2000:])


def test_train_finds_the_installed_demo_config(installed):
  target, elsewhere = installed
  workdir = elsewhere / "workdirs" / "demo"
  proc = _command(target, "pshrnet-train", "--config=configs/demo.py",
                  f"--workdir={workdir}", "--config.mode=nope", cwd=elsewhere)
  assert proc.returncode == 1
  # The config loaded (its mode field was checked), from the installed copy:
  assert "FATAL ConfigError: --config.mode='nope'" in proc.stderr, proc.stderr
  assert not workdir.exists()
  proc = _command(target, "pshrnet-train", "--config=nope",
                  f"--workdir={workdir}", cwd=elsewhere)
  assert proc.returncode == 1
  assert str(target / "configs") in proc.stderr and "demo," in proc.stderr
