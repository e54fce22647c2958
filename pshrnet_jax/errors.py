"""Every error that means bad input, in one place.

A bad config value, a dataset folder in the wrong layout, a checkpoint of
another model, an unreadable `.pth` file: each raises one of the types below
with a message that names the cause (the flag, the file, the key, the path).
`main` catches `INPUT_ERRORS` and prints that message as one FATAL line
instead of a traceback; anything else is a bug and keeps its traceback.

The config, dataset, pipeline and sampler errors are defined in the lowest
layer, `data_pipelines.errors`, and re-exported here. Nothing else is
imported from the project, so every layer can raise these types.
"""

from __future__ import annotations

import signal

from data_pipelines.errors import (  # pylint: disable=unused-import
    DATA_ERRORS, BuildDirError, ConfigError, DatasetError, DatasetLayoutError,
    DatasetNotFoundError, DemoSetMismatchError, EmptySplitError, FileNameError,
    LRPairingError, PipelineError, SamplerError, SplitError,
    UnreadableImageError)


# --- configuration, rank inputs --------------------------------------------


class OptimConfigError(ConfigError):
  """The optimiser section of the config is inconsistent."""


class ParamGroupError(ConfigError):
  """A parameter matches no learning-rate group, or more than one."""


class RankInputError(ValueError):
  """Distances, identities or cameras the rank metrics cannot evaluate."""


# --- weights, checkpoints, runs ---------------------------------------------


class TorchFileError(ValueError):
  """A `.pth` file that is unreadable, corrupt, or pickles something other
  than tensors and plain containers."""


class ConversionError(ValueError):
  """A PyTorch state dict does not match the Flax model (the message names
  the key, both shapes, or the missing and unexpected keys)."""


class CheckpointMismatchError(ValueError):
  """A saved checkpoint does not belong to the model/data being trained."""


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (disk full, permissions); the ones
  written before are intact."""


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir's lock."""


class MissingTeacherError(FileNotFoundError):
  """Phase 2 (or evaluation) was asked for without a phase-1 teacher."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf; the last good checkpoint is kept."""


class Preempted(Exception):
  """A phase stopped on SIGTERM/SIGINT after saving a checkpoint at `step`
  (not an error: `main` exits with 128 + the signal number)."""

  def __init__(self, phase: str, step: int, signal_name: str,
               directory: str):
    super().__init__(
        f"{phase} stopped by {signal_name} at step {step}; a checkpoint of "
        f"that step is in {directory}. Run the same command to continue.")
    self.phase, self.step, self.signal_name = phase, step, signal_name
    self.exit_code = 128 + int(getattr(signal.Signals, signal_name,
                                       signal.SIGTERM))


# What `main` reports as one FATAL line: bad input, and conditions of the
# machine a user can fix (a full disk, a busy workdir). FileNotFoundError
# covers paths the user gave that do not exist (images, checkpoints).
INPUT_ERRORS = DATA_ERRORS + (
    RankInputError, TorchFileError, ConversionError, CheckpointMismatchError,
    CheckpointSaveError, WorkdirBusyError, MissingTeacherError,
    NonFiniteLossError, FileNotFoundError)
