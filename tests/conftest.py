"""Shared test set-up: 8 CPU devices, a persistent XLA cache, absl flags.

- 8 CPU devices (`jax_num_cpu_devices`, set before JAX starts its backend),
  so the data-parallel tests run in this process; every other test places
  its arrays on one device (`tiny_setup.tiny_config` sets num_devices=1).
- Compile time dominates this suite on a CPU, so every test process reuses
  compiled executables across runs through JAX's persistent cache; within
  a process, tests that build an equal step share its trace
  (`steps.jit_step`'s key).
"""

import fcntl
import json
import os

import jax
import pytest
from absl import flags

import tiny_setup
from pshrnet_jax import driver

# Before JAX starts its backend (the first computation), not before imports.
jax.config.update("jax_num_cpu_devices", 8)
# LLVM at -O1: XLA:CPU compiles the suite's tiny programs about twice as
# fast, and they run in milliseconds either way. (-O0 gave a NaN gradient
# norm in the phase-1 step: not used.) Through the
# environment, so the `python -m pshrnet_jax.main` subprocesses compile, and
# find their cache entries, the same way.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=1").strip()
_CACHE_DIR = os.environ.get(
    "PSHRNET_JAX_TEST_CACHE",
    os.path.join(os.path.expanduser("~"), ".cache", "pshrnet_jax", "xla"),
)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
# Every program, even the small ones eager initialisation compiles: the
# subprocess runs then initialise in seconds.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# grain worker processes and absl-based code read flags; tests run without
# absl.app.run, so mark them parsed once here.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


# The files that take longest, in that order, ahead of all others (which keep
# their order). pytest.ini hands whole files to the workers as they free up
# (`--dist loadfile --no-loadscope-reorder`): a long file handed out last
# would leave the other core idle until it ends, so the long ones go first
# and the short ones even out the end. Longest: the accelerator smoke (one
# core, seven processes), the kill chain (six starts of the main command),
# the ablation runs, the two-process run.
_LONGEST_FIRST = ("test_accelerator_check.py", "test_kill_resume.py",
                  "test_ablations.py", "test_multiprocess.py",
                  "test_parity.py", "test_bad_input.py", "test_inference.py",
                  "test_reliability.py", "test_train.py", "test_convert.py",
                  "test_models.py", "test_main.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# The tiny end-to-end runs, shared by the test files that read them: made
# once per test session, however many pytest-xdist workers ask for them.

def _once_per_session(tmp_path_factory, name: str, make):
  """`make(directory)` run once in a new folder every worker sees; its
  JSON value, returned to each worker (the others wait for the first)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # pytest-N/, above each worker's popen-gwK/.
  directory, done = root / name, root / f"{name}.json"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if not done.exists():
      if directory.exists():
        raise RuntimeError(f"the session's {name!r} run failed in another "
                           f"worker (its error is in that test's report)")
      directory.mkdir()
      done.write_text(json.dumps(make(str(directory))))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory):
  """The tiny synthetic set in Market layout."""
  return _once_per_session(
      tmp_path_factory, "data",
      lambda d: tiny_setup.make_tiny_source(os.path.join(d, "src")))


def _train(source: str, workdir: str) -> dict:
  with tiny_setup.capture_logs() as logs:
    results = driver.run(tiny_setup.config_with(source), workdir)
  return {"workdir": workdir, "results": results, "log": logs.text}


@pytest.fixture(scope="session")
def tiny_trained(tiny_source, tmp_path_factory):
  """A full run (phase 1, phase 2, evaluation) in one workdir."""
  return _once_per_session(tmp_path_factory, "trained",
                           lambda d: _train(tiny_source, d))


@pytest.fixture(scope="session")
def tiny_killed(tiny_source, tmp_path_factory):
  """A phase-1 workdir stopped right after its checkpoint at step 4."""
  return _once_per_session(
      tmp_path_factory, "killed",
      lambda d: tiny_setup.run_killed(tiny_source, d))

