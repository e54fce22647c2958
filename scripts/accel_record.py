"""What the parts of `scripts/accelerator_check.py` share: the JSON record a
part fills row by row, its time cap, timestamps, and step-time statistics.
Imports neither JAX nor PyTorch."""

import json
import math
import os
import statistics
import sys
import time
import traceback


def say(text: str) -> None:
  """A timestamped progress line, flushed (only the output's tail may be
  seen)."""
  print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def spread(ms: list[float], pairs: int | None = None) -> dict:
  """Median, min, max and count of step (or call) times in ms, and with
  `pairs` the pairs/s at the median."""
  out = {"median_ms": statistics.median(ms), "min_ms": min(ms),
         "max_ms": max(ms), "n": len(ms)}
  if pairs:
    out["pairs_per_s"] = 1e3 * pairs / out["median_ms"]
  return out


def finite(*values) -> bool:
  return all(isinstance(v, (int, float)) and math.isfinite(v)
             for v in values)


class Record:
  """A part's results, rewritten to `path` (atomically) after every change,
  so the rows done survive the part being stopped at its time cap."""

  def __init__(self, path: str, deadline: float):
    self.path = path
    self.deadline = deadline
    self.data = {"rows": [], "errors": [], "info": {}}
    self._save()

  def _save(self) -> None:
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      json.dump(self.data, f, indent=1, default=str)
    os.replace(tmp, self.path)

  def info(self, **values) -> None:
    self.data["info"].update(values)
    self._save()

  def add(self, row: dict) -> None:
    self.data["rows"].append(row)
    self._save()

  def time_left(self) -> float:
    return self.deadline - time.time()

  def attempt(self, what: str, fn, *args, min_s: float = 0.0, **kwargs):
    """`fn(*args, **kwargs)`; its error (or no time left before it starts:
    under `min_s` seconds) is recorded under `what` and None returned, so
    the part goes on to its next row."""
    if self.time_left() < min_s:
      self.data["errors"].append({"what": what, "error": "skipped: the "
                                  "part's time cap was reached"})
      self._save()
      say(f"  {what}: skipped (time cap)")
      return None
    running = self.data.setdefault("running", [])
    running.append(what)  # Named if the part is stopped in it.
    self._save()
    try:
      result = fn(*args, **kwargs)
      running.pop()
      self._save()
      return result
    except Exception as e:  # pylint: disable=broad-except
      running.pop()
      trace = traceback.format_exc()
      sys.stderr.write(trace)
      self.data["errors"].append({"what": what,
                                  "error": f"{type(e).__name__}: {e}"[:2000],
                                  "traceback": trace[-4000:]})
      self._save()
      say(f"  {what}: FAILED {type(e).__name__}: {str(e)[:300]}")
      return None
