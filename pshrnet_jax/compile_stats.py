"""Seconds JAX spent tracing, lowering and compiling (or reading the
persistent cache), from its monitoring events; a program counts as a cache
hit when `/jax/compilation_cache/cache_hits` fires while it compiles.

    compile_stats.install()            # once per process; idempotent
    before = compile_stats.snapshot()
    ...                                # anything that compiles
    print(compile_stats.since(before).describe())
"""

from __future__ import annotations

import dataclasses
import threading

from jax import monitoring

_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_BACKEND = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


@dataclasses.dataclass(frozen=True)
class CompileStats:
  """Totals since install (or between two snapshots): backend compiles (built
  or read from the cache), cache hits, seconds compiling, tracing and
  lowering, and the slowest programs as (seconds, name), longest first."""
  programs: int = 0
  cache_hits: int = 0
  compile_s: float = 0.0
  trace_s: float = 0.0
  lower_s: float = 0.0
  slowest: tuple[tuple[float, str], ...] = ()

  @property
  def total_s(self) -> float:
    return self.compile_s + self.trace_s + self.lower_s

  def describe(self) -> str:
    """One line, e.g. for the log after a phase."""
    text = (f"{self.total_s:.1f} s compiling: {self.programs} programs "
            f"({self.cache_hits} from the cache) in {self.compile_s:.1f} s, "
            f"tracing {self.trace_s:.1f} s, lowering {self.lower_s:.1f} s")
    if self.slowest:
      text += "; slowest: " + ", ".join(f"{name} {s:.1f} s"
                                        for s, name in self.slowest[:3])
    return text


_SLOWEST = 8


class _Collector:
  """Accumulates JAX's compile events (thread-safe)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._hit_pending = threading.local()
    self.programs = self.cache_hits = 0
    self.compile_s = self.trace_s = self.lower_s = 0.0
    self.durations: list[tuple[float, str]] = []

  def on_event(self, event: str, **_) -> None:
    if event == _CACHE_HIT:
      self._hit_pending.value = True

  def on_duration(self, event: str, seconds: float, **kwargs) -> None:
    with self._lock:
      if event == _TRACE:
        self.trace_s += seconds
      elif event == _LOWER:
        self.lower_s += seconds
      elif event == _BACKEND:
        self.programs += 1
        if getattr(self._hit_pending, "value", False):
          self.cache_hits += 1
          self._hit_pending.value = False
        self.compile_s += seconds
        self.durations.append((seconds, str(kwargs.get("fun_name", "?"))))

  def snapshot(self) -> tuple[CompileStats, int]:
    with self._lock:
      return CompileStats(self.programs, self.cache_hits, self.compile_s,
                          self.trace_s, self.lower_s), len(self.durations)


_collector: _Collector | None = None
_install_lock = threading.Lock()


def install() -> None:
  """Starts collecting JAX's compile events in this process (idempotent)."""
  global _collector
  with _install_lock:
    if _collector is None:
      _collector = _Collector()
      monitoring.register_event_listener(_collector.on_event)
      monitoring.register_event_duration_secs_listener(_collector.on_duration)


def snapshot() -> tuple[CompileStats, int]:
  """The totals so far and how many programs they count (after `install()`)."""
  if _collector is None:
    raise RuntimeError("compile_stats.install() was not called")
  return _collector.snapshot()


def since(before: tuple[CompileStats, int]) -> CompileStats:
  """What was compiled after the `snapshot()` `before`."""
  (a, start), (b, end) = before, snapshot()
  with _collector._lock:  # pylint: disable=protected-access
    new = list(_collector.durations[start:end])
  slowest = tuple(sorted(new, reverse=True)[:_SLOWEST])
  return CompileStats(b.programs - a.programs, b.cache_hits - a.cache_hits,
                      b.compile_s - a.compile_s, b.trace_s - a.trace_s,
                      b.lower_s - a.lower_s, slowest)
