"""The bad-input errors the data package raises, each with a message that
names the cause (the flag, the folder, the file). `pshrnet_jax.errors`
includes `DATA_ERRORS`, so `main` prints these as one FATAL line.
"""

from PIL import Image


class ConfigError(ValueError):
  """A config value the run cannot use (the message names the flag)."""


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
  """The build directory is unusable (inside the source, another build)."""


class DemoSetMismatchError(DatasetError, FileExistsError):
  """The demo folder holds a different synthetic set (or something else)."""


class PipelineError(ValueError):
  """Records or images the input pipeline cannot use."""


class SamplerError(ValueError):
  """The P x K sampler cannot be built from these identities."""


# The bases of every type above.
DATA_ERRORS = (ConfigError, DatasetError, PipelineError, SamplerError)

# What PIL raises for a file it cannot decode, its own size limit included:
# more than 2 x Image.MAX_IMAGE_PIXELS pixels (a decompression bomb, checked
# from the header on opening) is a DecompressionBombError, which is neither
# an OSError nor a ValueError.
IMAGE_DECODE_ERRORS = (OSError, SyntaxError, ValueError,
                       Image.DecompressionBombError)
