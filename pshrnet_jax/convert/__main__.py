r"""Converts a PyTorch HRNet / PS-HRNet / ResNet-50 checkpoint into Orbax.

  python -m pshrnet_jax.convert \
      --input=hrnetv2_w32_imagenet_pretrained.pth --output=/tmp/hrnet_w32
  python -m pshrnet_jax.convert --kind=resnet50 \
      --input=resnet50-0676ba61.pth --output=/tmp/resnet50

(installed, `pshrnet-convert` is the same command) writes DIR/variables (Orbax: {'params', 'batch_stats'}) and
DIR/conversion.json (source, model class and arguments, key prefixes, keys
skipped, parameter count). Training starts from it with
`--config.init_from=DIR` (read by `pshrnet_jax.convert.restore_variables`).

The checkpoint is converted completely before anything is written, and the
files are renamed into place at the end, so a failure leaves DIR untouched.
An existing non-empty DIR is refused, unless --overwrite is given (then it is
replaced whole, once the new one is complete).
"""

import json
import os

from absl import app
from absl import flags

from data_pipelines import atomic
from data_pipelines import cli as cli_lib
from pshrnet_jax import console
from pshrnet_jax import convert

_INPUT = flags.DEFINE_string("input", None, "PyTorch .pth file.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Directory to create (must not exist or be empty).")
_KIND = flags.DEFINE_enum(
    "kind", "hrnet", ["hrnet", "teacher", "student", "resnet50"],
    "hrnet: ImageNet HRNet-W*-C (official or timm) -> HRNetClassifier; "
    "teacher / student: released PS-HRNet checkpoints -> HRNetReID / PSHRNet; "
    "resnet50: torchvision's ResNet-50 -> ResNet50Classifier (the "
    "--config.init_from of --config.model.backbone=resnet50).")
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace a non-empty --output folder.")
_WIDTH = flags.DEFINE_integer(
    "width", None, "Expected HRNet width (e.g. 32); default: the checkpoint's.")
_POOLING = flags.DEFINE_enum(
    "pooling", "avgmax", ["avg", "max", "avgmax"],
    "ReID pooling recorded for teacher/student models (not in the weights).")


def convert_file(input_path: str, output_dir: str, kind: str = "hrnet",
                 width: int | None = None, pooling: str = "avgmax", *,
                 overwrite: bool = False) -> dict:
  """Converts `input_path` and saves it under `output_dir`.

  Args:
    input_path: the PyTorch checkpoint.
    output_dir: directory to create; must not exist or be empty.
    kind: 'hrnet', 'teacher', 'student' or 'resnet50'.
    width: expected HRNet width, or None.
    pooling: ReID pooling mode for teacher/student.
    overwrite: replace a non-empty `output_dir` (whole, at the end).

  Returns:
    The conversion info written to conversion.json.

  Raises:
    FileExistsError: `output_dir` is not empty and not `overwrite`, or is a
      file (checked before converting).
    errors.ConversionError, errors.TorchFileError, FileNotFoundError: bad
      input; nothing is written.
  """
  atomic.refuse_to_clobber(output_dir, overwrite=overwrite, folder=True,
                           flag="--output")
  variables, _, info = convert.convert_checkpoint(
      input_path, kind, width=width, pooling=pooling)
  convert.save_variables(variables, output_dir, info,
                         replace=overwrite and os.path.exists(output_dir))
  return info


def main(argv):
  del argv
  if not _INPUT.value or not _OUTPUT.value:
    raise app.UsageError("--input and --output are required")
  try:
    info = convert_file(_INPUT.value, _OUTPUT.value, _KIND.value, _WIDTH.value,
                        _POOLING.value, overwrite=_OVERWRITE.value)
  except (ValueError, OSError) as e:
    return console.fatal(e)
  print(json.dumps({k: info[k] for k in ("model", "model_kwargs", "num_params",
                                          "num_tensors")}, indent=1))
  print(f"wrote {_OUTPUT.value} ({len(info['ignored_keys'])} unused keys "
        "skipped, listed in conversion.json)")
  return 0


def cli():
  """The console script (pyproject.toml)."""
  cli_lib.run(main, __name__)


if __name__ == "__main__":
  cli()
