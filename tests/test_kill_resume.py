"""A run killed anywhere and started again ends bit-identical to one that
was never interrupted.

Two copies of the same command (`python -m pshrnet_jax.main`, the tiny
set-up, both phases and evaluation) run side by side, each pinned to one
core (multi-threaded XLA:CPU reductions are not bitwise repeatable):

- the reference runs uninterrupted;
- the other is stopped four times and started again each time with the same
  command: SIGKILL in the middle of a phase-1 epoch, SIGKILL while the
  phase-1 teacher is being exported, SIGTERM in the middle of a phase-2
  epoch (a preemption: it must save a checkpoint at that step and exit with
  status 143), and SIGKILL while a phase-2 checkpoint is being written.

Both must end with the same exported teacher and student, bit for bit, and
the same results.json. The stopped runs log everything to the terminal
(`-v`), and each stop is triggered by one of the run's own log lines; the
reference run shows what a person sees by default, which is checked too.

The extractor is the tiny ResNet-50 (`--config.model.backbone=resnet50`):
stopping, saving and resuming belong to the loop and the checkpoint, the
same for every extractor, and the ResNet's programs are the quickest to
trace and initialise, which each of the six starts pays for again.
"""

import concurrent.futures
import io
import json
import logging
import os
import re
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

import tiny_setup as tiny
from pshrnet_jax import console
from pshrnet_jax import convert

# Phase 1: 2 epochs x 4 steps; phase 2: 2 epochs x 4 steps; a checkpoint
# every 3 steps, so every stop lands between checkpoints.
_OVERRIDES = {"mode": "all", "train.phase2_epochs": 2,
              "train.checkpoint_every_steps": 3, "model.backbone": "resnet50"}
# (what the line that triggers the stop matches, the signal).
_STOPS = (
    # After step 7 the save of checkpoint 6 has begun, and checkpoint 3 is
    # complete (a save first waits for the one before it to be written).
    (r"phase1 step 7/8 ", signal.SIGKILL),
    (r"phase1: exporting the teacher to .*/phase1/teacher\.", signal.SIGKILL),
    (r"phase2 step 2/8 ", signal.SIGTERM),
    (r"phase2: saving checkpoint 6 to .*/phase2/checkpoints\.",
     signal.SIGKILL),
)


def _command(source, workdir, *extra):
  return tiny.main_args(workdir, *tiny.main_overrides(source, **_OVERRIDES),
                        *extra)


_ENV = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")


def _pin(cpu):
  return lambda: os.sched_setaffinity(0, {cpu})


def _run(argv, cpu):
  """Runs a command on one core. Returns (returncode, stderr, stdout)."""
  proc = subprocess.run(argv, cwd=tiny.REPO, env=_ENV, capture_output=True,
                        text=True, timeout=600, preexec_fn=_pin(cpu))
  return proc.returncode, proc.stderr, proc.stdout


def _run_and_stop(argv, cpu, stop, out_dir):
  """Like _run, but sends `stop[1]` at the first stderr line that matches
  `stop[0]`. Returns (returncode, stderr, whether it was sent, stdout)."""
  os.makedirs(out_dir)
  paths = [os.path.join(out_dir, name) for name in ("stdout", "stderr")]
  with open(paths[0], "w") as out, open(paths[1], "w") as err:
    proc = subprocess.Popen(argv, cwd=tiny.REPO, env=_ENV, stdout=out,
                            stderr=err, preexec_fn=_pin(cpu))
  sent, seen, deadline = False, 0, time.monotonic() + 600
  with open(paths[1], "rb") as f:
    while proc.poll() is None and time.monotonic() < deadline:
      if stop is not None and not sent:
        f.seek(seen)
        text = f.read()
        complete = text[:text.rfind(b"\n") + 1]  # Whole lines only.
        if re.search(stop[0], complete.decode(errors="replace")):
          proc.send_signal(stop[1])
          sent = True
        seen += len(complete)
      time.sleep(0.02)
  code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
  stderr, stdout = (open(p).read() for p in paths[::-1])
  return code, stderr, sent, stdout


@pytest.fixture(scope="module")
def runs(tiny_source, tmp_path_factory):
  reference = str(tmp_path_factory.mktemp("uninterrupted"))
  stopped = str(tmp_path_factory.mktemp("stopped"))
  # The chain (five starts) on the last core, the reference on the first:
  # the accelerator smoke, which runs beside this file (conftest.py's
  # order), pins its training runs to the first core.
  cpus = sorted(os.sched_getaffinity(0))
  starts = str(tmp_path_factory.mktemp("starts"))
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    uninterrupted = pool.submit(_run, _command(tiny_source, reference),
                                cpus[0])
    chain = [_run_and_stop(_command(tiny_source, stopped, "-v"), cpus[-1],
                           stop, os.path.join(starts, str(i)))
             for i, stop in enumerate(_STOPS + (None,))]
    return {"reference": reference, "stopped": stopped,
            "uninterrupted": uninterrupted.result(), "chain": chain}


def test_every_stop_happened_as_planned(runs):
  assert runs["uninterrupted"][0] == 0, runs["uninterrupted"][1][-3000:]
  for (pattern, sig), (code, log, sent, _) in zip(_STOPS, runs["chain"]):
    assert sent, f"never saw {pattern!r}:\n{log[-3000:]}"
    if sig == signal.SIGKILL:
      assert code == -signal.SIGKILL, (pattern, code, log[-3000:])
  code, log, _, _ = runs["chain"][-1]
  assert code == 0, log[-3000:]
  # Each start after a SIGKILL went on from the last complete checkpoint.
  resumed = {1: r"phase1: resumed from step [36] of 8\.",  # Mid-epoch.
             2: r"phase1: resumed from step 8 of 8\.",  # Then exported.
             4: r"phase2: resumed from step [2-7] of 8\."}
  for start, pattern in resumed.items():
    log = runs["chain"][start][1]
    assert re.search(pattern, log), (start, log[-3000:])


def test_sigterm_saves_the_current_step_and_exits_143(runs):
  code, log, _, _ = runs["chain"][2]
  assert code == 143, log[-3000:]
  lines = [l for l in log.splitlines() if l.startswith("PREEMPTED ")]
  assert len(lines) == 1 and "Traceback" not in log, log[-3000:]
  step = int(re.search(r"SIGTERM at step (\d+);", lines[0]).group(1))
  assert 2 <= step < 8  # Mid-epoch in phase 2, not at its end.
  # The next start resumed from exactly that step, and trained on from the
  # step after it (none again, none skipped).
  resumed = runs["chain"][3][1]
  assert f"phase2: resumed from step {step} of 8." in resumed
  trained = [int(n) for n in re.findall(r"phase2 step (\d+)/8 ", resumed)]
  assert trained == list(range(step + 1, step + 1 + len(trained))), trained
  assert trained and trained[-1] >= 6  # Killed while saving step 6.


def test_stopped_run_ends_bit_identical_to_the_uninterrupted_one(runs):
  for export in ("phase1/teacher", "phase2/student"):
    a = convert.restore_variables(os.path.join(runs["reference"], export))
    b = convert.restore_variables(os.path.join(runs["stopped"], export))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y, err_msg=export)
  results = []
  for workdir in (runs["reference"], runs["stopped"]):
    with open(os.path.join(workdir, "results.json")) as f:
      results.append(json.load(f))
  assert results[0] == results[1]


def test_the_console_shows_progress_and_results_not_library_chatter(runs):
  _, stderr, stdout = runs["uninterrupted"]
  lines = stdout.splitlines()
  # A header per phase, progress lines (stdout is no terminal here), and
  # the result table at the very end, then where the files are.
  assert any(l.startswith("phase1 (teacher") for l in lines)
  assert any(re.match(r"phase2 \[#+\.*\] \d+/8 ", l) for l in lines)
  assert lines[-1].startswith("Results in ")
  # What each phase paid for compiling (driver._compile_report; the
  # evaluation's is in log.txt, below).
  for part in ("phase1", "phase2"):
    assert any(re.fullmatch(rf"{part}: compiling took \d+ s \(\d+ programs, "
                            r"\d+ from the cache\)", l) for l in lines), part
  table = [l for l in lines if l.startswith("| all |")]
  assert len(table) == 2  # The student's and the teacher's.
  assert stdout.rstrip().endswith(lines[-1])
  # INFO records (the libraries' and the run's own) are in log.txt, not in
  # the terminal.
  chatter = ("phase1: saving checkpoint 3 to ", "phase2: exporting the "
             "student to ", "phase2: final variables fingerprint ")
  for text in (stdout, stderr):
    assert not any(word in text for word in chatter), text[-2000:]
  with open(os.path.join(runs["reference"], "log.txt")) as f:
    log = f.read()
  assert all(word in log for word in chatter), log[-3000:]
  assert "phase2 step 8/8" in log
  assert re.search(r"evaluation: [\d.]+ s compiling: \d+ programs \(\d+ "
                   r"from the cache\)", log)


def test_library_speed_advice_stays_in_log_txt(tmp_path):
  """Orbax's 'waiting for the previous save' warning (a loaded machine
  gives it at any save) is kept off the terminal but not out of log.txt;
  a real warning still reaches both."""
  logger = logging.getLogger("test_library_speed_advice")
  terminal = io.StringIO()
  handler = logging.StreamHandler(terminal)
  handler.addFilter(console.HideAdvice())
  log_txt = console.WorkdirLog()
  log_txt.start(str(tmp_path))
  logger.addHandler(handler)
  logger.addHandler(log_txt)
  try:
    logger.warning("Waiting for previous save to complete took %f seconds. "
                   "If this number is high, consider checkpointing less "
                   "frequently.", 1.37)
    logger.warning("Checkpoint %d could not be read.", 6)
  finally:
    logger.removeHandler(handler)
    logger.removeHandler(log_txt)
    log_txt.close()
  assert terminal.getvalue() == "Checkpoint 6 could not be read.\n"
  with open(tmp_path / "log.txt") as f:
    written = f.read()
  assert "Waiting for previous save to complete took 1.370000" in written
  assert "Checkpoint 6 could not be read." in written
