"""Preemption: SIGTERM or SIGINT ends a phase with a checkpoint, not a loss.

A preempted cloud VM or a SLURM job at its time limit gets SIGTERM; a person
presses Ctrl-C (SIGINT). While a phase trains, either signal only sets a
flag; the loop finishes the step it is in, saves a checkpoint at that step,
and raises `errors.Preempted`, which `main` reports in one line before exiting with
status 128 + the signal number (143 for SIGTERM, 130 for SIGINT), so job
schedulers see an interrupted run. The same command then resumes from that
checkpoint.

With several processes each one may receive the signal at a different
step; JAX's preemption sync point (`multihost_utils.
reached_preemption_sync_point`) makes all of them stop at the same step.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionWatch:
  """Context manager: notes SIGTERM/SIGINT while a phase trains.

  Handlers are installed only in the main thread (Python's rule) and the
  previous ones are restored on exit. Elsewhere, and for several processes,
  JAX's preemption sync point is asked instead.
  """

  def __init__(self):
    self._signal: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> PreemptionWatch:
    # With several processes JAX's coordination service owns SIGTERM.
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      for sig in _SIGNALS:
        self._previous[sig] = signal.signal(sig, self._note)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _note(self, signum: int, frame: Any) -> None:
    del frame
    self._signal = signum

  @property
  def signal_name(self) -> str:
    return signal.Signals(self._signal or signal.SIGTERM).name

  def requested(self, step: int) -> bool:
    """Whether to stop after `step` (the same answer on every process)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._signal is not None
