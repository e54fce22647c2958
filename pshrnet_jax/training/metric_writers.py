"""At every log step: the console's progress bar, a full log line, and
TensorBoard scalars (tensorboardX, no TensorFlow) under
WORKDIR/tensorboard/<phase>. Only process 0 writes."""

from __future__ import annotations

import math
import time
from typing import Mapping

import jax
from absl import logging

from pshrnet_jax import console
from pshrnet_jax import workdir_layout

# The loss terms the progress bar shows (all of them go to the log).
_SHOWN = ("loss", "ce", "triplet", "sr", "ps")


class ProgressWriter:
  """Logs a line every `every_steps` steps and writes TensorBoard scalars.

  Between two log steps it measures the throughput (pairs/s, the host
  waiting for the device at each log step, so device time is included)
  and the share of that time the loop spent blocked on the input pipeline
  (`add_input_wait`): `perf/pairs_per_second` and `perf/input_wait_share`.
  """

  def __init__(self, workdir: str, phase: str, *, total_steps: int,
               steps_per_epoch: int, pairs_per_step: int, every_steps: int,
               start_step: int = 0):
    self.phase = phase
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.pairs_per_step = pairs_per_step
    self.every_steps = max(1, every_steps)
    self._writer = self._bar = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(workdir_layout.tensorboard_dir(workdir,
                                                                  phase))
      self._bar = console.ProgressBar(
          phase, total_steps, unit="pairs", items_per_step=pairs_per_step,
          every=self.every_steps, start=start_step)
    self._last_time = time.perf_counter()
    self._last_step = None
    self._input_wait = 0.0

  def should_write(self, step: int) -> bool:
    return step % self.every_steps == 0 or step == self.total_steps

  def add_input_wait(self, seconds: float) -> None:
    """Counts `seconds` the loop spent waiting for its next batch."""
    self._input_wait += seconds

  def write(self, step: int, metrics: Mapping[str, float],
            learning_rates: Mapping[str, float]) -> None:
    """Logs `metrics` (host floats) at `step` (number of steps done)."""
    now = time.perf_counter()
    rate = wait_share = float("nan")
    if self._last_step is not None and step > self._last_step:
      rate = (step - self._last_step) * self.pairs_per_step / (now - self._last_time)
      wait_share = self._input_wait / (now - self._last_time)
    self._last_time, self._last_step = now, step
    self._input_wait = 0.0
    remaining = (self.total_steps - step) * self.pairs_per_step / rate
    eta = "?" if not math.isfinite(remaining) else f"{remaining / 60:.1f} min"
    terms = " ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
    lrs = " ".join(f"lr[{k}] {v:.3g}" for k, v in sorted(learning_rates.items()))
    logging.info("%s step %d/%d epoch %.2f | %s | %s | %.1f pairs/s | input "
                 "wait %.1f%% | ETA %s", self.phase, step, self.total_steps,
                 step / self.steps_per_epoch, terms, lrs, rate,
                 100 * wait_share, eta)
    if self._bar is not None:
      self._bar.update(step, {k: metrics[k] for k in _SHOWN if k in metrics})
    if self._writer is not None:
      for key, value in metrics.items():
        self._writer.add_scalar(f"train/{key}", value, step)
      for key, value in learning_rates.items():
        self._writer.add_scalar(f"lr/{key}", value, step)
      if math.isfinite(rate):
        self._writer.add_scalar("perf/pairs_per_second", rate, step)
        self._writer.add_scalar("perf/input_wait_share", wait_share, step)
      self._writer.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._writer is not None:
      self._writer.close()
