"""Every error that means bad input, each with a message naming the cause.

`main` prints `INPUT_ERRORS` as one FATAL line; anything else is a bug and
keeps its traceback. The data errors come from the lowest layer,
`data_pipelines.errors`; nothing else is imported from the project.
"""

from __future__ import annotations

import signal

from data_pipelines.errors import (
    DATA_ERRORS, BuildDirError, ConfigError, DatasetError, DatasetLayoutError,
    DatasetNotFoundError, DemoSetMismatchError, EmptySplitError, FileNameError,
    LRPairingError, PipelineError, SamplerError, SplitError,
    UnreadableImageError)

__all__ = [
    "DATA_ERRORS", "BuildDirError", "ConfigError", "DatasetError",
    "DatasetLayoutError", "DatasetNotFoundError", "DemoSetMismatchError",
    "EmptySplitError", "FileNameError", "LRPairingError", "PipelineError",
    "SamplerError", "SplitError", "UnreadableImageError", "OptimConfigError",
    "ParamGroupError", "RankInputError", "TorchFileError", "ConversionError",
    "CheckpointMismatchError", "UnreadableVariablesError",
    "CheckpointSaveError", "WorkdirBusyError",
    "MissingTeacherError", "NonFiniteLossError", "Preempted", "INPUT_ERRORS"]


class OptimConfigError(ConfigError):
  """The optimiser section of the config is inconsistent."""


class ParamGroupError(ConfigError):
  """A parameter matches no learning-rate group, or more than one."""


class RankInputError(ValueError):
  """Distances, identities or cameras the rank metrics cannot evaluate."""


class TorchFileError(ValueError):
  """A `.pth` file that is unreadable, corrupt, or pickles non-tensors."""


class ConversionError(ValueError):
  """A PyTorch state dict that does not match the Flax model."""


class CheckpointMismatchError(ValueError):
  """A saved checkpoint of another model or data than the one trained."""


class UnreadableVariablesError(ValueError):
  """Saved variables (an export, converted weights) that cannot be read."""


class CheckpointSaveError(OSError):
  """A checkpoint could not be written; the earlier ones are intact."""


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir's lock."""


class MissingTeacherError(FileNotFoundError):
  """Phase 2 (or evaluation) was asked for without a phase-1 teacher."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf; the last good checkpoint is kept."""


class Preempted(Exception):
  """A phase stopped by SIGTERM/SIGINT after a checkpoint at `step`; `main`
  exits with 128 + the signal number."""

  def __init__(self, phase: str, step: int, signal_name: str,
               directory: str):
    super().__init__(
        f"{phase} stopped by {signal_name} at step {step}; a checkpoint of "
        f"that step is in {directory}. Run the same command to continue.")
    self.phase, self.step, self.signal_name = phase, step, signal_name
    self.exit_code = 128 + int(getattr(signal.Signals, signal_name,
                                       signal.SIGTERM))


# What `main` reports as one FATAL line: bad input, and machine conditions a
# user can fix (a full disk, a busy workdir, a path that does not exist, an
# output that exists and is not to be overwritten).
INPUT_ERRORS = DATA_ERRORS + (
    RankInputError, TorchFileError, ConversionError, CheckpointMismatchError,
    UnreadableVariablesError, CheckpointSaveError, WorkdirBusyError, MissingTeacherError,
    NonFiniteLossError, FileNotFoundError, FileExistsError)
