r"""Export a trained feature extractor for serving (jax.export or ONNX).

    python -m pshrnet_jax.export --model=workdirs/demo --out=exported/demo \
        [--which=student|teacher] [--format=jax|onnx] [--overwrite]

writes OUT/feature_extractor.jax (running it needs jax and flatbuffers:
pshrnet_jax/inference/serving.py) or, with --format=onnx,
OUT/feature_extractor.onnx (ONNX Runtime and other ONNX runtimes;
inference/onnx_export.py), each with OUT/feature_extractor.json. A
non-empty OUT is refused, before any work, unless --overwrite is given (then
replaced whole).
"""

from absl import app
from absl import flags

from data_pipelines import atomic
from data_pipelines import cli as cli_lib
from pshrnet_jax import console
from pshrnet_jax import errors
from pshrnet_jax.inference import commands

_MODEL, _WHICH = commands.define_flags()
flags.adopt_module_key_flags(commands)  # --help lists them too.
_OUT = flags.DEFINE_string("out", None, "Folder to create.", required=True)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False,
                                  "Replace a non-empty --out folder.")
_FORMAT = flags.DEFINE_enum(
    "format", "jax", ["jax", "onnx"], "jax: feature_extractor.jax "
    "(jax.export); onnx: feature_extractor.onnx (ONNX Runtime and other "
    "ONNX runtimes; needs pip install '.[onnx]').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  console.start_command_log("export", flags.FLAGS["verbosity"].present)
  try:
    atomic.refuse_to_clobber(_OUT.value, overwrite=_OVERWRITE.value,
                             folder=True)
    # JAX and the model code once the flags and --out have passed: --help,
    # a bad flag and a refused folder answer at once.
    from pshrnet_jax.inference import loading  # pylint: disable=g-import-not-at-top
    if _FORMAT.value == "onnx":
      from pshrnet_jax.inference import onnx_export as exporter  # pylint: disable=g-import-not-at-top
    else:
      from pshrnet_jax.inference import serving as exporter  # pylint: disable=g-import-not-at-top
    model, variables, info = loading.load_model(_MODEL.value, _WHICH.value)
    description = exporter.export_model(model, variables, info, _OUT.value,
                                        overwrite=_OVERWRITE.value)
  except (*errors.INPUT_ERRORS, FileExistsError) as e:
    return console.fatal(e)
  height, width, _ = description["input"]["shape"][1:]
  console.say(f"Exported the {info.kind} of {info.path} to {_OUT.value}/"
              f"{description['artefact']}: "
              f"uint8 (batch, {height}, {width}, 3) -> features (batch, "
              f"{description['outputs']['features']['shape'][1]}) and SR.")
  return 0


def cli():
  """The console script (pyproject.toml)."""
  cli_lib.run(main, __name__)


if __name__ == "__main__":
  cli()
