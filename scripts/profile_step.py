"""Where a training step's time goes, operation by operation.

Usage:
  python scripts/profile_step.py --image_size=64,32 --hrnet_modules=1,1,1 \
      --hrnet_blocks=1 --p=4 --k=2                     # the demo's network
  python scripts/profile_step.py --width=32 --image_size=256,128 \
      --sr_blocks=18 --sr_features=64 --p=2 --k=2      # the paper's size

For each phase it compiles the project's step (scripts/jax_steps.py: the
same step `python -m pshrnet_jax.main` trains with), runs it `--steps` times
under `jax.profiler.trace` with XLA:CPU's per-operation trace events on
(`--xla_cpu_enable_xprof_traceme=true`, set here before JAX starts), reads
the trace back with `jax.profiler.ProfileData` (no TensorFlow, no
TensorBoard) and prints, per step:

  * the top HLO operations by time, with their share of all operation
    time, their kind and output shape;
  * the time per kind of work: convolutions by role (forward, input
    gradient, weight gradient: told apart by the HLO's metadata, see
    `_conv_role`), dots (GEMMs), layout copies and transposes, reductions,
    elementwise fusions, the rest.

Operation times are summed over XLA's threads, so with more than one thread
the sum can exceed the wall time of the step (both are printed). This is
the attribution behind README's "Where a step's time goes".
"""

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time

# Before JAX starts its CPU backend: XLA:CPU then records one trace event
# per executed operation.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from scripts import jax_steps  # pylint: disable=g-import-not-at-top,wrong-import-position

# One HLO instruction of the optimised module:
#   %name = f32[8,64,32,4]{3,2,1,0} opcode(operands), attr=..., metadata={...}
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+?)(?:\{[\d,]*\})? ([\w\-]+)\((.*)$")
# The header of a computation: `%fused_computation.2 (...) -> ... {`.
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")


def hlo_instructions(hlo_text: str) -> dict[str, dict[str, str]]:
  """{instruction name: opcode, shape, fusion kind, op_name, and for a
  fusion `inner`: the opcodes of the computation it calls}."""
  out, inner = {}, collections.defaultdict(set)
  computation = ""
  for line in hlo_text.splitlines():
    c = _COMPUTATION.match(line)
    if c and not line.startswith(" "):
      computation = c.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, opcode, rest = m.groups()
    inner[computation].add(opcode)
    info = {"opcode": opcode, "shape": shape}
    kind = re.search(r"\bkind=(\w+)", rest)
    if kind:
      info["kind"] = kind.group(1)
    op_name = re.search(r'op_name="([^"]*)"', rest)
    info["op_name"] = op_name.group(1) if op_name else ""
    called = re.search(r"calls=%?([\w.\-]+)", rest)
    if called:
      info["calls"] = called.group(1)
    out[name] = info
  for info in out.values():
    info["inner"] = inner.get(info.get("calls", ""), set())
  return out


def _conv_role(info: dict[str, str], batch: int) -> str:
  """forward / input gradient / weight gradient of a convolution.

  JAX names the backward pass's operations `transpose(jvp(...))`, and XLA
  drops the name of the convolutions it rewrites for the backward pass; so
  a named convolution outside `transpose(...)` is a forward one. A gradient
  convolution whose output's leading (batch) dimension is the batch is an
  input gradient; XLA:CPU computes a weight gradient as conv(x^T, dy^T) with
  batch and features swapped, so its output leads with the input features.
  (A layer with exactly `batch` input features would be counted as an input
  gradient: a heuristic, stated.)
  """
  op_name = info.get("op_name", "")
  if op_name and "transpose(" not in op_name:
    return "conv forward"
  lead = re.match(r"\w+\[(\d+)", info["shape"])
  if lead and int(lead.group(1)) == batch:
    return "conv input gradient"
  return "conv weight gradient"


def category(name: str, info: dict | None, batch: int) -> str:
  """A coarse kind of work for an HLO instruction (`name` as executed)."""
  if info is None:
    return "other"
  opcode, inner = info["opcode"], info["inner"]
  # XLA:CPU hands convolutions and GEMMs to YNNPACK or oneDNN as custom
  # fusions; what they compute is inside.
  if opcode == "convolution" or "convolution" in inner:
    return _conv_role(info, batch)
  if opcode == "dot" or "dot" in inner:
    return "dot (GEMM)"
  if opcode in ("copy", "transpose") or re.match(
      r"(transpose_)?copy_fusion|transpose_fusion", name):
    return "copy / transpose"
  if opcode in ("reduce", "reduce-window", "select-and-scatter"):
    return opcode
  if opcode == "fusion":
    return {"kInput": "fusion (reduction)", "kOutput": "fusion (output)",
            "kLoop": "fusion (elementwise)"}.get(info.get("kind"),
                                                 "fusion (other)")
  if opcode in ("scatter", "gather", "dynamic-slice", "dynamic-update-slice",
                "sort", "custom-call", "all-reduce"):
    return opcode
  return "other"


def trace_ops(compiled, built, steps: int) -> tuple[dict[str, float], list]:
  """Runs `steps` steps under the profiler; returns ({HLO op: ns summed},
  [wall ms per step])."""
  state, metrics = compiled(*built.args)
  jax.block_until_ready(metrics)
  built.state = state
  walls = []
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir):
      for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(*built.args)
        jax.block_until_ready(metrics)
        built.state = state
        walls.append(1e3 * (time.perf_counter() - t0))
    path, = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"),
                      recursive=True)
    data = jax.profiler.ProfileData.from_file(path)
  per_op = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if "hlo_op" in stats:
          per_op[stats["hlo_op"]] += event.duration_ns
  return dict(per_op), walls


def report(phase: int, per_op: dict[str, float], walls: list,
           instructions: dict, steps: int, top: int, batch: int) -> None:
  total = sum(per_op.values())
  what = ("teacher, L_ID" if phase == 1
          else "student + frozen teacher, L_TOTAL")
  print(f"\nPhase {phase} ({what}): step wall {statistics.median(walls):.1f} "
        f"ms (median of {steps}); operation time {total / 1e6 / steps:.1f} ms "
        f"per step, {len(per_op)} distinct operations")
  by_kind = collections.defaultdict(lambda: [0.0, 0])
  for name, ns in per_op.items():
    entry = by_kind[category(name, instructions.get(name), batch)]
    entry[0] += ns
    entry[1] += 1
  print(f"  {'kind of work':<28s}{'ms/step':>9s}{'share':>8s}{'ops':>6s}")
  for kind, (ns, n) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
    print(f"  {kind:<28s}{ns / 1e6 / steps:9.1f}{100 * ns / total:7.1f}%"
          f"{n:6d}")
  print(f"  Top {top} operations:")
  print(f"  {'ms/step':>8s}{'share':>8s}  {'kind':<24s}{'output shape':<26s}"
        "operation")
  for name, ns in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]:
    info = instructions.get(name)
    shape = info["shape"] if info else "?"
    print(f"  {ns / 1e6 / steps:8.2f}{100 * ns / total:7.1f}%  "
          f"{category(name, info, batch):<24s}{shape:<26s}{name}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  jax_steps.add_size_flags(parser)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--phases", default="1,2")
  args = parser.parse_args()
  jax_steps.check_size_flags(parser, args)
  config = jax_steps.make_config(args)
  print(f"{os.cpu_count()} cores; jax {jax.__version__}; "
        f"XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
  print(f"Config: HRNet-W{args.width} (modules {tuple(args.hrnet_modules)}, "
        f"{args.hrnet_blocks} blocks), VDSR-CA {args.sr_blocks} blocks x "
        f"{args.sr_features} ch, {args.image_size[0]}x{args.image_size[1]}, "
        f"P x K = {args.p} x {args.k}, float32")
  batch = jax_steps.make_batch(args)
  for phase in (int(p) for p in args.phases.split(",")):
    built = jax_steps.build_step(phase, config, args, batch)
    t0 = time.perf_counter()
    compiled = built.step.lower(*built.args).compile()
    print(f"\nPhase {phase}: compiled in {time.perf_counter() - t0:.1f} s")
    per_op, walls = trace_ops(compiled, built, args.steps)
    # Phase 2 runs the student on P x K LR images (and the teacher on HR).
    report(phase, per_op, walls, hlo_instructions(compiled.as_text()),
           args.steps, args.top, batch=args.p * args.k)


if __name__ == "__main__":
  main()
