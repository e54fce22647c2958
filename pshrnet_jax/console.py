"""What a person sees in the terminal, and the full log kept beside it.

The console shows a header per phase, a progress bar and the summary;
everything logged goes to WORKDIR/log.txt once a run is sure to use the
workdir (until then records stay in memory), or for the commands without a
workdir to ~/.cache/pshrnet_jax/logs/<command>.log. Imports nothing from
the project.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
import threading
import time
from typing import Mapping, NoReturn, TextIO

from absl import logging as absl_logging


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else (
      f"{minutes}:{seconds:02d}")


class ProgressBar:
  """step/total, items/s, ETA and a few named values, on one line: redrawn
  in place on a terminal, else printed every `every` updates and at the end.
  """

  def __init__(self, title: str, total: int, *, unit: str = "it",
               items_per_step: int = 1, every: int = 1,
               stream: TextIO | None = None, start: int = 0):
    self.title, self.total, self.unit = title, total, unit
    self.items_per_step = items_per_step
    self.every = max(1, every)
    self.stream = stream or sys.stdout
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self._start_step = start
    self._start_time = time.perf_counter()
    self._last = ""

  def line(self, step: int, values: Mapping[str, float] | None = None) -> str:
    """The progress line at `step` (number of steps done)."""
    elapsed = time.perf_counter() - self._start_time
    done = step - self._start_step
    rate = done * self.items_per_step / elapsed if elapsed > 0 else 0.0
    eta = ((self.total - step) * self.items_per_step / rate
           if rate > 0 else float("nan"))
    width = 20
    filled = int(width * step / max(self.total, 1))
    bar = "#" * filled + "." * (width - filled)
    text = (f"{self.title} [{bar}] {step}/{self.total} "
            f"{rate:.1f} {self.unit}/s ETA {_format_duration(eta)}")
    if values:
      text += " | " + " ".join(f"{k} {v:.4g}" for k, v in values.items())
    return text

  def update(self, step: int,
             values: Mapping[str, float] | None = None) -> None:
    """Shows progress after `step` steps (on a terminal, always)."""
    if not self.tty and step % self.every and step != self.total:
      return
    text = self.line(step, values)
    if self.tty:
      pad = max(0, len(self._last) - len(text))
      self.stream.write("\r" + text + " " * pad)
    else:
      self.stream.write(text + "\n")
    self._last = text
    self.stream.flush()

  def close(self) -> None:
    if self.tty and self._last:
      self.stream.write("\n")
      self.stream.flush()
    self._last = ""


def say(text: str, stream: TextIO | None = None) -> None:
  """A line for the person at the terminal (headers, summaries)."""
  stream = stream or sys.stdout
  stream.write(text.rstrip("\n") + "\n")
  stream.flush()


def fatal(error: BaseException | str) -> int:
  """The one FATAL line on stderr every command line ends with on bad
  input (an exception is named by its type); returns the exit status 1."""
  if isinstance(error, BaseException):
    error = f"{type(error).__name__}: {error}"
  sys.stderr.write(f"FATAL {error}\n")
  sys.stderr.flush()
  return 1


def finish(code: int, grace_s: float = 5.0) -> NoReturn:
  """Ends the process with `code` after an error: threads a library left
  running (which would hold the process, waiting for what never comes) get
  `grace_s` to end, then it ends anyway, logs flushed (os._exit), child
  processes terminated."""
  deadline = time.monotonic() + grace_s
  main = threading.main_thread()

  def left() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t is not main and not t.daemon and t.is_alive()]

  for thread in left():
    thread.join(max(0.0, deadline - time.monotonic()))
  stuck = left()
  if not stuck:
    sys.exit(code)
  logging.getLogger("absl").info(
      "Exiting with %d thread(s) still running: %s.", len(stuck),
      ", ".join(t.name for t in stuck))
  for child in multiprocessing.active_children():
    child.terminate()
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


class WorkdirLog(logging.Handler):
  """Every log record, kept in memory until `start(workdir)`, then written
  to WORKDIR/log.txt (appending, so a resumed run continues the file)."""

  def __init__(self, capacity: int = 10000):
    super().__init__(logging.DEBUG)
    self.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname).1s %(module)s] %(message)s"))
    self._pending: list[logging.LogRecord] = []
    self._capacity = capacity
    self._file: TextIO | None = None

  def start(self, workdir: str, name: str = "log.txt",
            mode: str = "a") -> None:
    if self._file is not None:
      return
    self._file = open(os.path.join(workdir, name), mode)
    for record in self._pending:
      self._write(record)
    self._pending = []

  def _write(self, record: logging.LogRecord) -> None:
    self._file.write(self.format(record) + "\n")
    self._file.flush()

  def emit(self, record: logging.LogRecord) -> None:
    try:
      if self._file is not None:
        self._write(record)
      elif len(self._pending) < self._capacity:
        self._pending.append(record)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    super().close()


# Library warnings that are advice about speed, not trouble (Orbax: a save
# waited for the previous one); they stay in log.txt.
ADVICE_NOT_TROUBLE = ("Waiting for previous save to complete took",)


class HideAdvice(logging.Filter):
  """Keeps the records of ADVICE_NOT_TROUBLE off the handler it filters."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(message.startswith(a) for a in ADVICE_NOT_TROUBLE)


class HideLibraryTracebacks(logging.Filter):
  """Keeps off the terminal the tracebacks Orbax logs when a save or a
  restore fails: the command reports that failure itself, in one line (the
  records stay in the log file)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and "orbax" in record.pathname)


def _quiet_unraisablehook(previous):
  """After a failed write, TensorStore completes the writes Orbax had
  started on an event loop Orbax has since closed; each completion reports
  'Event loop is closed' as an unraisable error, with nothing left to do
  about it. Those go to the log file; every other one as before."""

  def hook(unraisable):
    if (unraisable.exc_type is RuntimeError
        and str(unraisable.exc_value) == "Event loop is closed"):
      logging.getLogger("absl").debug("after a failed write: %s",
                                      unraisable.exc_value)
      return
    previous(unraisable)
  return hook


_WORKDIR_LOG: WorkdirLog | None = None


def install_workdir_log() -> WorkdirLog:
  """Sends every record of the 'absl' logger (absl, Orbax) to a WorkdirLog."""
  global _WORKDIR_LOG
  if _WORKDIR_LOG is None:
    _WORKDIR_LOG = WorkdirLog()
    logger = logging.getLogger("absl")
    logger.addHandler(_WORKDIR_LOG)
    logger.setLevel(min(logger.level or logging.INFO, logging.INFO))
  return _WORKDIR_LOG


def start_workdir_log(workdir: str) -> None:
  """Starts writing WORKDIR/log.txt, if a WorkdirLog is installed."""
  if _WORKDIR_LOG is not None:
    _WORKDIR_LOG.start(workdir)


def route_logs(verbose: bool) -> None:
  """Every record of absl (and Orbax) to the WorkdirLog; to the terminal
  (absl's handler) only warnings and worse, less the libraries' speed
  advice (ADVICE_NOT_TROUBLE) and Orbax's tracebacks of a failure the
  command reports itself, unless `verbose` (-v, --verbosity)."""
  install_workdir_log()
  if not verbose:
    # Python's level (30), not absl's logging.WARNING (-1).
    handler = absl_logging.get_absl_handler()
    handler.setLevel(logging.WARNING)
    handler.addFilter(HideAdvice())
    handler.addFilter(HideLibraryTracebacks())
    sys.unraisablehook = _quiet_unraisablehook(sys.unraisablehook)


# Where the commands without a workdir (extract, search, export) keep their
# log: <command>.log, the last run's.
LOG_DIR_ENV = "PSHRNET_JAX_LOG_DIR"
DEFAULT_LOG_DIR = os.path.join("~", ".cache", "pshrnet_jax", "logs")


def start_command_log(command: str, verbose: bool) -> str | None:
  """`route_logs`, then the log in $PSHRNET_JAX_LOG_DIR (default
  ~/.cache/pshrnet_jax/logs)/<command>.log; its path, or None where that
  folder cannot be written (the records then stay in memory)."""
  route_logs(verbose)
  folder = os.path.expanduser(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR)
  try:
    os.makedirs(folder, exist_ok=True)
    _WORKDIR_LOG.start(folder, f"{command}.log", mode="w")
  except OSError:
    return None
  return os.path.join(folder, f"{command}.log")
