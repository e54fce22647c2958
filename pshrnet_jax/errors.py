"""Every error that means bad input, in one place.

A bad config value, a dataset folder in the wrong layout, a checkpoint of
another model, an unreadable `.pth` file: each raises one of the types below
with a message that names the cause (the flag, the file, the key, the path).
`main` catches `INPUT_ERRORS` and prints that message as one FATAL line
instead of a traceback; anything else is a bug and keeps its traceback.

This module imports nothing from the project, so every layer (data readers,
models, conversion, training, evaluation) can raise these types.
"""

from __future__ import annotations

import signal


# --- configuration ----------------------------------------------------------


class ConfigError(ValueError):
  """A config value the run cannot use (the message names the flag)."""


class OptimConfigError(ConfigError):
  """The optimiser section of the config is inconsistent."""


class ParamGroupError(ConfigError):
  """A parameter matches no learning-rate group, or more than one."""


# --- datasets ---------------------------------------------------------------


class DatasetError(ValueError):
  """The dataset on disk or the requested split is unusable."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
  """The dataset root (or a file it must contain) does not exist."""


class DatasetLayoutError(DatasetError):
  """The folder exists but does not hold the expected layout."""


class FileNameError(DatasetLayoutError):
  """An image file name does not follow the dataset's naming rule."""


class UnreadableImageError(DatasetError):
  """An image file cannot be decoded."""


class EmptySplitError(DatasetError):
  """A split (train, query or gallery) ends up with no images."""


class SplitError(DatasetError):
  """An identity split is inconsistent (unknown ids, no gallery match...)."""


class LRPairingError(DatasetError):
  """A pre-built LR folder does not pair with the HR originals by name."""


class BuildDirError(DatasetError):
  """The build directory is unusable (inside the source, or it holds a
  different build)."""


class DemoSetMismatchError(DatasetError, FileExistsError):
  """The demo folder holds a different synthetic set (or something else)."""


class RankInputError(ValueError):
  """Distances, identities or cameras the rank metrics cannot evaluate."""


class PipelineError(ValueError):
  """Records or images the input pipeline cannot use."""


class SamplerError(ValueError):
  """The P x K sampler cannot be built from these identities."""


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
INPUT_ERRORS = (ConfigError, DatasetError, PipelineError, SamplerError,
                RankInputError, TorchFileError, ConversionError,
                CheckpointMismatchError, CheckpointSaveError,
                WorkdirBusyError, MissingTeacherError, NonFiniteLossError,
                FileNotFoundError)
