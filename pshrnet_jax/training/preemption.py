"""SIGTERM (a preempted VM, a job's time limit) or SIGINT (Ctrl-C) ends a
phase with a checkpoint: the loop finishes its step, saves it and raises
`errors.Preempted` (exit status 128 + the signal number); the same command
resumes. With several processes JAX's preemption sync point makes all of
them stop at the same step."""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionWatch:
  """Context manager noting SIGTERM/SIGINT (handlers only in the main
  thread, Python's rule; the previous ones restored on exit)."""

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
