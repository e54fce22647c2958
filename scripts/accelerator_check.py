r"""How this project trains on an accelerator, in one command.

  bash scripts/accelerator_setup.sh && \
      python3 scripts/accelerator_check.py --out=DIR      # on a GPU machine
  python scripts/accelerator_check.py --smoke --out=DIR   # every part, CPU

At the paper's network and batch (HRNet-W32, VDSR-CA 18 x 64, 256 x 128,
P x K = 4 x 6; M = 751), on the first device, each part in its own process
with its own time cap (a part that fails or runs out of time records why,
and the next one starts), all within `--budget_s`:

  pipeline        (c) the synthetic set drawn at the network size, then the
                  grain P x K pipeline alone with every core, pairs/s;
  jax             (a) phase-1 and phase-2 training steps in float32 and
                  bfloat16 (`model.compute_dtype`), the training loop's own
                  jitted step: compile time, median step time over
                  `--steps` after `--warmup`, device memory; (b) the
                  flip-summed student extraction at batch 128, and the
                  matmul rate the extraction is measured against;
  torch           the same steps and extraction in PyTorch eager
                  (reference/), on the same device;
  loop            (d) the training loop (`driver.run`, what `python -m
                  pshrnet_jax.main` runs), phase 1 on the synthetic set for
                  a few hundred steps: steps/s and the share of the time
                  the loop was blocked on its input; (e) the same run
                  preempted (SIGTERM) half-way and resumed: its final
                  variables against the uninterrupted run's, bit for bit
                  or the largest difference;
  jax_nobarrier   the steps again with `layers.materialize`'s optimisation
                  barriers left out (written for XLA:CPU; what they do on
                  this backend);
  resume_deterministic  (e) again, shorter, under the XLA flags that make
                  GPU runs deterministic (`--resume_flags`; the next
                  alternative if XLA refuses one); with no flags (the CPU
                  smoke), (e)'s bit-identical row stands for it;
  torch_compile   the PyTorch steps under `torch.compile` (`--compile_rows`).

It prints progress with timestamps, then one table, and writes
DIR/accelerator_check.json (every figure), DIR/accelerator_check.txt (the
table) and DIR/accelerator_check.log (everything, the parts' output too).
Goals (issue 20): JAX at least PyTorch eager's speed in every step row,
bfloat16 at least 1.5x float32, the pipeline at least 2x what the step
needs, the loop blocked on input under 10% of its time.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from scripts import accel_report
from scripts import jax_steps
from scripts.accel_record import Record
from scripts.accel_record import say
# pylint: enable=g-import-not-at-top,wrong-import-position

# (part, time cap in seconds at full size), in the order they run.
PARTS = (("pipeline", 75), ("jax", 240), ("torch", 90), ("loop", 200),
         ("jax_nobarrier", 150), ("resume_deterministic", 150),
         ("torch_compile", 180))
# Every part at tiny sizes on the CPU: the suite runs this.
SMOKE = dict(width=4, head_planes=[4, 8, 16, 32], hrnet_modules=[1, 1, 1],
             hrnet_blocks=1, sr_blocks=2, sr_features=8, image_size=[64, 32],
             p=4, k=2, num_classes=6, rows="1:float32,2:bfloat16",
             nobarrier_rows="1:float32", compile_rows="1:float32", warmup=1,
             steps=2, extract_batch=4, extract_repeats=2, matmul_size=256,
             compile_backend="eager", workers=1, pipeline_steps=4, set_ids=6,
             set_test_ids=6, set_images=2, loop_steps=8, loop_log_every=1,
             loop_dtype="float32", resume_epochs=2, pin_one_core=True,
             torch_threads=1, resume_flags="", budget_s=1800, cap_s=900)
# XLA:GPU's deterministic mode (deterministic algorithms, no autotuning);
# the second is its finer-grained form, tried if the first is refused.
DETERMINISTIC_FLAGS = ("--xla_gpu_deterministic_ops=true;"
                       "--xla_gpu_exclude_nondeterministic_ops=true "
                       "--xla_gpu_autotune_level=0")
# What XLA says (and dies of) when XLA_FLAGS holds a flag it does not know.
UNKNOWN_FLAG = re.compile(r"Unknown flags? in XLA_FLAGS")
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax",
            "optax", "orbax-checkpoint", "torch", "numpy", "grain",
            "tensorflow-datasets", "ml_collections", "tensorboardX",
            "absl-py", "pillow")


def _pairs(text: str) -> list[tuple[int, str]]:
  rows = []
  for item in filter(None, text.split(",")):
    phase, dtype = item.split(":")
    rows.append((int(phase), dtype))
  return rows


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  jax_steps.add_size_flags(parser, width=32, image_size=(256, 128), p=4, k=6,
                           sr_blocks=18, sr_features=64)
  parser.add_argument("--out", required=True, help="where the JSON, the "
                      "table and the log go")
  parser.add_argument("--smoke", action="store_true",
                      help="every part at tiny sizes (the suite runs it)")
  parser.add_argument("--parts", default=",".join(p for p, _ in PARTS))
  parser.add_argument("--budget_s", type=float, default=480)
  parser.add_argument("--cap_s", type=float, default=0,
                      help="every part's time cap (0: each its own)")
  parser.add_argument("--rows", default="1:float32,1:bfloat16,2:float32,"
                      "2:bfloat16", help="phase:dtype of the step rows, in "
                      "the order they run")
  parser.add_argument("--nobarrier_rows", default="1:float32,2:float32")
  parser.add_argument("--compile_rows", default="",
                      help="phase:dtype of torch_compile's rows (default: "
                      "--rows)")
  for name, default in (("warmup", 3), ("steps", 20), ("extract_batch", 128),
                        ("extract_repeats", 20), ("matmul_size", 8192),
                        ("workers", os.cpu_count()), ("pipeline_steps", 100),
                        ("set_ids", 100), ("set_test_ids", 4),
                        ("set_images", 4), ("loop_steps", 300),
                        ("loop_log_every", 20), ("resume_epochs", 2),
                        ("torch_threads", 0)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--compile_backend", default="inductor")
  parser.add_argument("--loop_dtype", default="bfloat16")
  parser.add_argument("--resume_flags", default=DETERMINISTIC_FLAGS,
                      help="';'-separated alternatives, tried in order")
  parser.add_argument("--pin_one_core", action="store_true",
                      help="the loop parts on one core (XLA:CPU's threaded "
                      "reductions are not bitwise repeatable)")
  parser.add_argument("--compilation_cache", default="",
                      help="a persistent XLA cache for every part (default: "
                      "none, and one in the scratch folder for the loop "
                      "parts' runs); compile times are then cache loads "
                      "when warm")
  parser.add_argument("--scratch", default="", help="working folder "
                      "(default: a new temporary one, removed at the end)")
  parser.add_argument("--part", default="", help=argparse.SUPPRESS)
  parser.add_argument("--deadline", type=float, default=0,
                      help=argparse.SUPPRESS)
  parser.add_argument("--added_flags", default="", help=argparse.SUPPRESS)
  if "--smoke" in argv:
    parser.set_defaults(**SMOKE)
  args = parser.parse_args(argv)
  jax_steps.check_size_flags(parser, args)
  args.row_list = _pairs(args.rows)
  args.nobarrier_list = _pairs(args.nobarrier_rows)
  args.compile_list = _pairs(args.compile_rows) or args.row_list
  args.dtype_list = list(dict.fromkeys(d for _, d in args.row_list))
  unknown = set(args.parts.split(",")) - {p for p, _ in PARTS}
  if unknown:
    parser.error(f"--parts: no part {sorted(unknown)}; the parts are "
                 f"{[p for p, _ in PARTS]}")
  return args


# ------------------------------------------------------------ in a part
def run_part(args) -> None:
  record = Record(os.path.join(args.scratch, f"{args.part}.json"),
                  args.deadline)
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain reads its absl flags.
  if args.part in ("pipeline", "loop", "resume_deterministic"):
    from scripts import accel_loop as part  # pylint: disable=g-import-not-at-top
    if args.part == "pipeline":
      import jax  # pylint: disable=g-import-not-at-top
      jax.config.update("jax_platforms", "cpu")  # No device work here.
    run = {"pipeline": part.pipeline_part, "loop": part.loop_part,
           "resume_deterministic": part.resume_part}[args.part]
    record.attempt(args.part, run, args, record)
  elif args.part in ("jax", "jax_nobarrier"):
    import jax  # pylint: disable=g-import-not-at-top
    from scripts import accel_jax  # pylint: disable=g-import-not-at-top
    if args.compilation_cache:
      # Compile times are then cache loads when the cache is warm.
      jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if args.part == "jax_nobarrier":
      args.row_list = args.nobarrier_list
    record.attempt(args.part, accel_jax.run, args, record, args.part)
  else:
    from scripts import accel_torch  # pylint: disable=g-import-not-at-top
    if args.part == "torch_compile":
      args.row_list = args.compile_list
    record.attempt(args.part, accel_torch.run, args, record, args.part)


# ------------------------------------------------------------ the driver
class _Tee:
  """stdout, copied to the log file."""

  def __init__(self, stream, log):
    self.stream, self.log = stream, log

  def write(self, text):
    self.stream.write(text)
    self.log.write(text)

  def flush(self):
    self.stream.flush()
    self.log.flush()


def environment() -> dict:
  env = {"python": platform.python_version(), "machine": platform.machine(),
         "cores": os.cpu_count(), "XLA_FLAGS": os.environ.get("XLA_FLAGS",
                                                             "")}
  for name in PACKAGES:
    try:
      env[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  if shutil.which("nvidia-smi"):
    query = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
         "--format=csv,noheader"], capture_output=True, text=True,
        check=False).stdout.strip().splitlines()
    if query:
      env["nvidia_smi"] = query[0]
      env["driver"] = query[0].split(",")[1].strip()
  return env


def _start(args, name: str, timeout: float, argv: list[str],
           xla_flags: str = "") -> dict:
  """Runs one part in its own process (group), `xla_flags` added to
  XLA_FLAGS; returns its rows, errors, status and output."""
  cmd = [sys.executable, os.path.abspath(__file__), *argv, f"--part={name}",
         f"--scratch={args.scratch}", f"--added_flags={xla_flags}",
         f"--deadline={time.time() + max(timeout - 15, timeout * 0.8)}"]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
  if name.startswith("torch"):
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  start = time.perf_counter()
  log_path = os.path.join(args.scratch, f"{name}.log")
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, cwd=_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
  status = "ok"
  try:
    proc.wait(timeout=timeout)
    if proc.returncode != 0:
      status = f"exited with {proc.returncode}"
  except subprocess.TimeoutExpired:
    status = "stopped at its time cap"
  finally:
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # Its workers and commands too.
    except ProcessLookupError:
      pass
    proc.wait()
  part = {"rows": [], "errors": [], "info": {}}
  path = os.path.join(args.scratch, f"{name}.json")
  if os.path.exists(path):
    with open(path) as f:
      part = json.load(f)
  running = part.pop("running", [])
  if running:  # What the time cap (or a crash) cut short.
    part["errors"].append({"what": running[-1],
                           "error": f"cut short: the part {status}"})
  if status == "ok" and part["errors"]:
    status = "errors"
  with open(log_path, errors="replace") as f:
    output = f.read()
  return dict(part, status=status, seconds=time.perf_counter() - start,
              output=output)


def _run_part(args, name: str, timeout: float, argv: list[str]) -> dict:
  """`_start`; 'resume_deterministic' under each `--resume_flags`
  alternative in turn until XLA accepts one."""
  if name != "resume_deterministic":
    return _start(args, name, timeout, argv)
  refused, end = [], time.time() + timeout
  for flags in args.resume_flags.split(";"):
    if refused and end - time.time() < 30:
      break
    part = _start(args, name, end - time.time(), argv, flags.strip())
    if part["rows"] or not UNKNOWN_FLAG.search(part["output"]):
      break
    refused.append({"what": f"XLA_FLAGS {flags.strip()!r}",
                    "error": "refused by XLA: "
                    + UNKNOWN_FLAG.search(part["output"]).group(0)})
    say(f"  XLA refused {flags.strip()!r}; the next alternative")
  part["errors"] = refused + part["errors"]
  return part


def drive(args, argv, log) -> dict:
  """Runs the parts in order within the budget; `log` gets their output."""
  os.makedirs(args.out, exist_ok=True)
  own_scratch = not args.scratch
  args.scratch = os.path.abspath(
      args.scratch or tempfile.mkdtemp(prefix="accelerator_check_"))
  os.makedirs(args.scratch, exist_ok=True)
  forwarded = [a for a in argv if not a.startswith("--scratch=")]
  begin = time.time()
  results = {"smoke": args.smoke, "date": datetime.datetime.now().isoformat(
      timespec="seconds"), "budget_s": args.budget_s, "command": argv,
             "settings": {k: v for k, v in vars(args).items()
                          if k not in ("part", "deadline", "out", "scratch")},
             "environment": environment(), "parts": {}}
  for section in ("peak", "steps", "extract", "pipeline", "loop", "resume"):
    results[section] = []
  kinds = {"step": "steps"}
  try:
    for name, cap in PARTS:
      if name not in args.parts.split(","):
        continue
      left = begin + args.budget_s - time.time()
      if left < 30:
        results["parts"][name] = {"status": "skipped: budget spent",
                                  "seconds": 0.0, "errors": []}
        say(f"{name}: skipped, {left:.0f} s of the budget left")
        continue
      timeout = min(args.cap_s or cap, left)
      say(f"{name}: starting (time cap {timeout:.0f} s)")
      part = _run_part(args, name, timeout, forwarded)
      for row in part["rows"]:
        kind = row.pop("kind")
        results[kinds.get(kind, kind)].append(row)
      results["environment"].update(part["info"].pop("environment", {}))
      results["parts"][name] = {k: part[k] for k in ("status", "seconds",
                                                     "errors", "info")}
      log.write(f"----- {name} output -----\n{part['output']}")
      say(f"{name}: {part['status']} after {part['seconds']:.0f} s, "
          f"{len(part['rows'])} rows")
      if part["status"] != "ok":
        for error in part["errors"]:
          say(f"  {error['what']}: {error['error'][:500]}")
        if not part["errors"]:
          say("  last lines of its output:\n"
              + "\n".join(part["output"].splitlines()[-15:]))
      _write(results, args, begin)
  finally:
    if own_scratch:
      shutil.rmtree(args.scratch, ignore_errors=True)
  text = _write(results, args, begin)
  print(text, flush=True)
  return results


def _write(results: dict, args, begin: float) -> str:
  """Derives what needs several parts, writes the JSON and the table (after
  every part: what is done survives the machine going away)."""
  results["elapsed_s"] = time.time() - begin
  accel_report.derive(results, args)
  results["goals"] = accel_report.goals(results, args)
  text = accel_report.table(results)
  with open(os.path.join(args.out, "accelerator_check.txt"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(args.out, "accelerator_check.json"), "w") as f:
    json.dump(results, f, indent=1, default=str)
  return text


def main(argv=None) -> dict | None:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse(argv)
  if args.part:
    run_part(args)
    return None
  import jax  # pylint: disable=g-import-not-at-top
  # This process only starts the parts: never the device (on a GPU JAX
  # would take most of its memory from them).
  jax.config.update("jax_platforms", "cpu")
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "accelerator_check.log"), "w") as log:
    stdout, sys.stdout = sys.stdout, _Tee(sys.stdout, log)
    try:
      return drive(args, argv, log)
    finally:
      sys.stdout = stdout


if __name__ == "__main__":
  main()
