"""scripts/accelerator_check.py --smoke: every part of the one-call GPU check
runs on the CPU at tiny sizes, and its JSON holds every row with values
that make sense (issue 20); and the loop's input-wait measurement."""

import json
import math
import os
import subprocess
import sys
import types

import jax
import pytest

import tiny_setup
from pshrnet_jax.training import metric_writers
from scripts import accelerator_check

REPO = tiny_setup.REPO
# The smoke's rows (scripts/accelerator_check.py, SMOKE); torch.compile's
# and the no-barrier variant's are the first alone.
ROWS = {(1, "float32"), (2, "bfloat16")}
DTYPES = {"float32", "bfloat16"}


@pytest.fixture(scope="module")
def check(tmp_path_factory):
  out = tmp_path_factory.mktemp("accelerator_check")
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.run(
      [sys.executable, os.path.join("scripts", "accelerator_check.py"),
       "--smoke", f"--out={out}",
       f"--compilation_cache={jax.config.jax_compilation_cache_dir}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
  with open(out / "accelerator_check.json") as f:
    results = json.load(f)
  return results, proc.stdout, out


def _positive(*values):
  return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
             for v in values)


def test_every_part_ran_and_the_files_are_written(check):
  results, stdout, out = check
  assert {k: v["status"] for k, v in results["parts"].items()} == {
      name: "ok" for name in ("pipeline", "jax", "torch", "loop",
                              "jax_nobarrier", "resume_deterministic",
                              "torch_compile")}
  # The smoke says so wherever its figures appear.
  assert results["smoke"] is True
  assert "SMOKE: tiny sizes on this machine, not a result" in stdout
  with open(out / "accelerator_check.txt") as f:
    assert f.read().strip() in stdout
  with open(out / "accelerator_check.log") as f:
    log = f.read()
  # The parts' own output is in the log.
  assert "----- jax output -----" in log and "loop: " in log
  env = results["environment"]
  assert env["jax_backend"] == "cpu" and env["torch_device"] == "cpu"
  assert env["jax"] == jax.__version__


def test_step_rows_side_by_side(check):
  results, _, _ = check
  steps = results["steps"]
  for variant, framework, expected in (
      ("default", "jax", ROWS), ("eager", "torch", ROWS),
      ("compile", "torch", {(1, "float32")})):
    rows = [r for r in steps if r["variant"] == variant]
    assert {(r["phase"], r["dtype"]) for r in rows} == expected, variant
    for r in rows:
      assert r["framework"] == framework
      assert r["n"] == 2 and _positive(r["median_ms"], r["compile_s"])
      assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
      assert r["pairs_per_s"] == pytest.approx(8e3 / r["median_ms"])
      assert r["finite"] and _positive(r["first_loss"], r["last_loss"])
  # The same batch, network and losses on both sides: the same first loss
  # is not expected (other random weights), but the same ballpark is.
  for r in steps:
    assert 0.1 < r["first_loss"] < 50
  jax_rows = [r for r in steps if r["framework"] == "jax"]
  for r in jax_rows:
    assert _positive(r["program_bytes"])
    assert r["barriers"] is (r["variant"] == "default")
  (nobarrier,) = [r for r in steps if r["variant"] == "no_barriers"]
  assert (nobarrier["phase"], nobarrier["dtype"]) == (1, "float32")
  # CPU: no device memory counters on the PyTorch side.
  assert all(r["peak_bytes"] is None for r in steps
             if r["framework"] == "torch")


def test_extraction_and_peak_rows(check):
  results, _, _ = check
  assert {(r["framework"], r["dtype"]) for r in results["peak"]} == {
      (f, d) for f in ("jax", "torch") for d in DTYPES}
  assert all(_positive(r["gflops"]) for r in results["peak"])
  rows = {(r["framework"], r["dtype"]): r for r in results["extract"]}
  assert set(rows) == {(f, d) for f in ("jax", "torch") for d in DTYPES}
  for (framework, dtype), r in rows.items():
    assert r["batch"] == 4 and _positive(r["images_per_s"], r["gflops"])
    peak = max(p["gflops"] for p in results["peak"] if p["dtype"] == dtype)
    assert r["peak_gflops"] == peak
    assert r["share_of_peak"] == pytest.approx(r["gflops"] / peak)
    flops = rows[("jax", dtype)]["flops_per_batch"]
    assert r["gflops"] == pytest.approx(flops / r["median_ms"] / 1e6)
  # bfloat16 features against float32 ones, unit vectors each.
  cosine = results["parts"]["jax"]["info"]["bf16_feature_cosine_min"]
  assert 0.5 < cosine <= 1.0 + 1e-6


def test_pipeline_loop_and_resume_rows(check):
  results, _, out = check
  pipeline = {(r["phase"], r["workers"]): r for r in results["pipeline"]}
  # One grain worker process (the smoke's --workers) and none.
  assert set(pipeline) == {(1, 1), (2, 1), (2, 0)}
  for (phase, _), r in pipeline.items():
    assert _positive(r["pairs_per_s"])
    fastest = min(s["median_ms"] for s in results["steps"]
                  if s["framework"] == "jax" and s["phase"] == phase
                  and s["variant"] == "default")
    assert r["step_needs_pairs_per_s"] == pytest.approx(8e3 / fastest)
  (loop,) = results["loop"]
  # 2 epochs of the tiny set's 4 steps, a log line every step: the 7
  # intervals after the first logged step are timed.
  assert (loop["steps"], loop["timed_steps"], loop["intervals"]) == (8, 7, 7)
  assert _positive(loop["steps_per_s"], loop["timed_s"])
  assert loop["steps_per_s"] == pytest.approx(7 / loop["timed_s"])
  assert 0 <= loop["input_wait_share"] < 1
  isolated = [s["median_ms"] for s in results["steps"]
              if (s["framework"], s["variant"], s["phase"], s["dtype"])
              == ("jax", "default", 1, loop["dtype"])]
  assert loop["isolated_step_ms"] == isolated[0]
  assert loop["loop_ms_per_step"] == pytest.approx(1e3 / loop["steps_per_s"])
  assert loop["device_idle_share_estimate"] == pytest.approx(
      1 - isolated[0] / loop["loop_ms_per_step"])
  resumes = {r["name"]: r for r in results["resume"]}
  assert set(resumes) == {"resume", "resume_deterministic"}
  for r in resumes.values():
    # 8 steps, checkpoints every 2; SIGTERM while step 5 is logged: the
    # loop sees it after step 6, saves that step and stops.
    assert (r["steps"], r["checkpoint_every"], r["stopped_at"]) == (8, 2, 6)
    # One core on the CPU: bit-identical.
    assert r["identical"] and r["max_abs_diff"] == 0
    assert r["leaves"] > 50 and r["leaves_differing"] == 0
    # The smoke adds no flags (the CPU needs none): what the suite set.
    assert r["xla_flags"] == os.environ.get("XLA_FLAGS", "")
  # Without flags of its own, the deterministic part would run the loop
  # part's (e) again: that bit-identical run is its row, marked so.
  assert [r["reference"] for r in resumes.values()] == ["loop", "loop"]
  det = resumes["resume_deterministic"]
  assert det["same_run_as"] == "resume" and "same_run_as" not in resumes[
      "resume"]
  assert {k: v for k, v in det.items() if k not in (
      "name", "same_run_as", "seconds")} == {
          k: v for k, v in resumes["resume"].items()
          if k not in ("name", "seconds")}
  assert det["seconds"] == [] and len(resumes["resume"]["seconds"]) == 2
  with open(out / "accelerator_check.log") as f:
    assert "the loop part's (e), bit-identical, is this part's result" in (
        f.read())


def test_goals_follow_from_the_rows(check):
  results, _, _ = check
  goals = results["goals"]
  assert {g["goal"] for g in goals} == {
      "JAX step at least PyTorch eager's speed",
      "JAX bfloat16 at least 1.5x float32",
      "pipeline at least 2x what the step needs",
      "loop blocked on input under 10% of its time"}
  for g in goals:
    if g["value"] is None:
      assert g["met"] is None
    elif g["goal"].startswith("loop"):
      assert g["met"] is (g["value"] < g["target"])
    else:
      assert g["met"] is (g["value"] >= g["target"])
  # No phase has both dtypes in the smoke: the bfloat16 goal is not
  # measured there, and says so.
  assert all(g["met"] is None for g in goals if "bfloat16" in g["goal"])


def test_progress_writer_measures_the_input_wait(tmp_path, monkeypatch):
  clock = iter([0.0, 2.0, 6.0])
  monkeypatch.setattr(metric_writers, "time", types.SimpleNamespace(
      perf_counter=lambda: next(clock)))
  writer = metric_writers.ProgressWriter(
      str(tmp_path), "phase1", total_steps=10, steps_per_epoch=5,
      pairs_per_step=24, every_steps=5)
  writer.add_input_wait(0.5)  # Before the first log step: not counted.
  writer.write(5, {"loss": 1.0}, {"hrnet": 0.1})  # t = 2
  writer.add_input_wait(1.0)
  writer.add_input_wait(0.5)
  writer.write(10, {"loss": 0.5}, {"hrnet": 0.1})  # t = 6
  writer.close()
  scalars = tiny_setup.read_scalars(os.path.join(tmp_path, "tensorboard",
                                                 "phase1"))
  # 5 steps of 24 pairs in 4 s, 1.5 s of it waiting for input.
  assert scalars["perf/pairs_per_second"] == [(10, pytest.approx(30.0))]
  assert scalars["perf/input_wait_share"] == [(10, pytest.approx(0.375))]


_TRY_XLA = "import jax.numpy as jnp; jnp.zeros(2).block_until_ready()"


@pytest.mark.parametrize(
    "flags", accelerator_check.DETERMINISTIC_FLAGS.split(";"))
def test_xla_knows_the_deterministic_flags(flags):
  # XLA parses every backend's flags: a misspelt GPU flag fails here too.
  env = dict(os.environ, XLA_FLAGS=flags)
  proc = subprocess.run([sys.executable, "-c", _TRY_XLA], env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_flag_xla_refuses_is_recognised():
  env = dict(os.environ, XLA_FLAGS="--xla_gpu_no_such_flag=true")
  proc = subprocess.run([sys.executable, "-c", _TRY_XLA], env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert accelerator_check.UNKNOWN_FLAG.search(proc.stderr), proc.stderr[-2000:]
