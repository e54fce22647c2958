"""The figures `scripts/accelerator_check.py` derives from its parts' rows
(shares of the peak, what a step needs from the pipeline, the goals of
issue 20) and the table it prints."""

import math

# Issue 20's goals on one H200, and their targets.
SPEED = "JAX step at least PyTorch eager's speed"
BF16 = "JAX bfloat16 at least 1.5x float32"
PIPELINE = "pipeline at least 2x what the step needs"
INPUT_WAIT = "loop blocked on input under 10% of its time"
GOALS = ((SPEED, 1.0), (BF16, 1.5), (PIPELINE, 2.0), (INPUT_WAIT, 0.10))


def _rows(results, section, **match):
  return [r for r in results[section]
          if all(r.get(k) == v for k, v in match.items())]


def _one(results, section, **match):
  rows = _rows(results, section, **match)
  return rows[0] if rows else None


def derive(results: dict, args) -> None:
  """Adds to `results`' rows what needs rows of several parts."""
  peaks = {}
  for row in results["peak"]:
    peaks[row["dtype"]] = max(peaks.get(row["dtype"], 0.0), row["gflops"])
  results["peak_gflops"] = peaks
  for row in results["extract"]:
    jax_row = _one(results, "extract", framework="jax", dtype=row["dtype"])
    if jax_row and jax_row["flops_per_batch"] and row["dtype"] in peaks:
      # Both frameworks do the same work: XLA's count of the JAX program.
      rate = jax_row["flops_per_batch"] / (row["median_ms"] / 1e3) / 1e9
      row.update(gflops=rate, peak_gflops=peaks[row["dtype"]],
                 share_of_peak=rate / peaks[row["dtype"]])
  pairs = args.p * args.k
  for row in results["pipeline"]:
    steps = [r["median_ms"] for r in _rows(results, "steps", framework="jax",
                                           variant="default",
                                           phase=row["phase"])]
    if steps:
      row["step_needs_pairs_per_s"] = 1e3 * pairs / min(steps)
      row["times_the_need"] = row["pairs_per_s"] / row[
          "step_needs_pairs_per_s"]
  for row in results["loop"]:
    step = _one(results, "steps", framework="jax", variant="default",
                phase=1, dtype=row["dtype"])
    if step:
      # The device busy for the isolated step's time at every step, idle
      # the rest (input, logging, dispatch); negative: the loop's steps
      # ran faster than the isolated ones, each waited for.
      row["loop_ms_per_step"] = 1e3 / row["steps_per_s"]
      row["isolated_step_ms"] = step["median_ms"]
      row["device_idle_share_estimate"] = (
          1 - step["median_ms"] / row["loop_ms_per_step"])


def _goal(goal: str, value, **key) -> dict:
  target = dict(GOALS)[goal]
  met = None
  if value is not None:
    met = value < target if goal == INPUT_WAIT else value >= target
  return dict(goal=goal, **key, value=value, target=target, met=met)


def goals(results: dict, args) -> list[dict]:
  """Issue 20's goals, each met (True), not (False) or not measured (None)."""
  out = []
  for jax_row in _rows(results, "steps", framework="jax", variant="default"):
    key = dict(phase=jax_row["phase"], dtype=jax_row["dtype"])
    eager = _one(results, "steps", framework="torch", variant="eager", **key)
    out.append(_goal(SPEED, eager and eager["median_ms"]
                     / jax_row["median_ms"], **key))
  for phase in sorted({r["phase"] for r in results["steps"]}):
    f32, bf16 = (_one(results, "steps", framework="jax", variant="default",
                      phase=phase, dtype=d) for d in ("float32", "bfloat16"))
    out.append(_goal(BF16, f32 and bf16 and f32["median_ms"]
                     / bf16["median_ms"], phase=phase))
  for row in _rows(results, "pipeline", workers=args.workers):
    out.append(_goal(PIPELINE, row.get("times_the_need"), phase=row["phase"]))
  if results["loop"]:
    out.append(_goal(INPUT_WAIT, results["loop"][0]["input_wait_share"]))
  for goal, _ in GOALS:  # Each goal at least once, if only unmeasured.
    if not any(g["goal"] == goal for g in out):
      out.append(_goal(goal, None))
  return out


def _f(value, fmt="{:.2f}", none="-"):
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return none
  return fmt.format(value)


def _mib(value):
  return _f(None if value is None else value / 2**20, "{:,.0f} MiB")


def table(results: dict) -> str:
  """The check's figures as plain-text tables."""
  lines = []
  add = lines.append
  env = results["environment"]
  what = ("SMOKE: tiny sizes on this machine, not a result" if results["smoke"]
          else "full sizes")
  add(f"Accelerator check {results['date']} ({what})")
  plugin = env.get("jax-cuda13-plugin") or env.get("jax-cuda12-plugin", "-")
  add(f"device: {env.get('gpu') or env.get('jax_device')}; driver "
      f"{env.get('driver', '-')}; Python {env.get('python')}; jax "
      f"{env.get('jax')} / jaxlib {env.get('jaxlib')} "
      f"({env.get('jax_backend')}, CUDA plugin {plugin}), flax "
      f"{env.get('flax')}, optax {env.get('optax')}, orbax "
      f"{env.get('orbax-checkpoint')}, torch {env.get('torch')} (CUDA "
      f"{env.get('torch_cuda', '-')}, cuDNN {env.get('cudnn', '-')})")
  s = results["settings"]
  add(f"network: HRNet-W{s['width']} {s['hrnet_modules']}x"
      f"{s['hrnet_blocks']}, VDSR-CA {s['sr_blocks']}x{s['sr_features']}, "
      f"{s['image_size'][0]}x{s['image_size'][1]}, P x K {s['p']} x "
      f"{s['k']}, M {s['num_classes']}; {s['warmup']} warm-up + "
      f"{s['steps']} timed steps, medians (min-max)")
  add("")
  add("(a) training step, ms: median (min-max)")
  add(f"  {'':<18s}{'JAX':<22s}{'torch eager':<22s}{'torch.compile':<22s}"
      f"{'eager/JAX':>9s}{'JAX compile':>12s}{'JAX memory':>12s}"
      f"{'torch memory':>13s}  last loss JAX | torch")
  for j in _rows(results, "steps", framework="jax", variant="default"):
    key = dict(phase=j["phase"], dtype=j["dtype"])
    e = _one(results, "steps", framework="torch", variant="eager", **key)
    c = _one(results, "steps", framework="torch", variant="compile", **key)
    cell = lambda r: (f"{r['median_ms']:.1f} ({r['min_ms']:.1f}-"
                      f"{r['max_ms']:.1f})" if r else "-")
    add(f"  phase {j['phase']} {j['dtype']:<10s}{cell(j):<22s}{cell(e):<22s}"
        f"{cell(c):<22s}"
        f"{_f(e and e['median_ms'] / j['median_ms'], '{:.2f}x'):>9s}"
        f"{_f(j['compile_s'], '{:.0f} s'):>12s}"
        f"{_mib(j['program_bytes']):>12s}"
        f"{_mib(e and e.get('peak_bytes')):>13s}  "
        f"{_f(j['last_loss'], '{:.3g}')} | "
        f"{_f(e and e['last_loss'], '{:.3g}')}")
  for n in _rows(results, "steps", variant="no_barriers"):
    j = _one(results, "steps", framework="jax", variant="default",
             phase=n["phase"], dtype=n["dtype"])
    add(f"  without layers.materialize's barriers, phase {n['phase']} "
        f"{n['dtype']}: {n['median_ms']:.1f} ms (with: "
        f"{_f(j and j['median_ms'], '{:.1f} ms')}), compile "
        f"{n['compile_s']:.0f} s")
  add("")
  add("(b) extraction, batch "
      f"{s['extract_batch']}, flip-summed: images/s (GFLOP/s, share of the "
      "measured matmul peak)")
  for dtype, peak in sorted(results.get("peak_gflops", {}).items()):
    cells = []
    for fw in ("jax", "torch"):
      r = _one(results, "extract", framework=fw, dtype=dtype)
      cells.append(f"{fw} {_f(r and r['images_per_s'], '{:,.1f}')} "
                   f"({_f(r and r.get('gflops'), '{:,.0f}')}, "
                   f"{_f(r and r.get('share_of_peak'), '{:.0%}')})")
    add(f"  {dtype:<9s} {cells[0]:<32s}{cells[1]:<32s} peak "
        f"{peak:,.0f} GFLOP/s")
  add("")
  add("(c) input pipeline, pairs/s (what the fastest JAX step of the phase "
      "needs)")
  for r in results["pipeline"]:
    add(f"  phase {r['phase']}, {r['workers']:>2d} workers: "
        f"{r['pairs_per_s']:,.0f} ({_f(r.get('times_the_need'), '{:.1f}x')}"
        f" of {_f(r.get('step_needs_pairs_per_s'), '{:,.0f}')})")
  add("")
  for r in results["loop"]:
    add(f"(d) training loop ({r['dtype']}, {r['workers']} workers): "
        f"{r['steps_per_s']:.2f} steps/s over {r['timed_steps']} steps; "
        f"blocked on input {r['input_wait_share']:.1%} of the time; "
        f"{_f(r.get('loop_ms_per_step'), '{:.1f}')} ms a step against "
        f"{_f(r.get('isolated_step_ms'), '{:.1f}')} ms isolated (a): the "
        f"device idle {_f(r.get('device_idle_share_estimate'), '{:.1%}')}")
  for r in results["resume"]:
    same = ("bit-identical" if r["identical"] else
            f"{r['leaves_differing']}/{r['leaves']} arrays differ, max "
            f"{r['max_abs_diff']:.3g}")
    add(f"(e) {r['name']}: preempted at step {r['stopped_at']} of "
        f"{r['steps']} and resumed, XLA_FLAGS {r['xla_flags'] or '-'}: "
        f"{same}")
  add("")
  add("goals:")
  for g in results["goals"]:
    where = " ".join(f"{k} {g[k]}" for k in ("phase", "dtype")
                     if g.get(k) is not None)
    met = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
    add(f"  {g['goal']} {where}: {_f(g['value'], '{:.3g}')} -> {met}")
  add("")
  add("parts: " + ", ".join(f"{k} {v['status']} ({v['seconds']:.0f} s)"
                            for k, v in results["parts"].items()))
  return "\n".join(lines)
