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
from pshrnet_jax.inference import loading
from pshrnet_jax.inference import onnx_export
from pshrnet_jax.inference import serving

_MODEL, _WHICH = loading.define_flags()
_OUT = flags.DEFINE_string("out", None, "Folder to create.", required=True)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False,
                                  "Replace a non-empty --out folder.")
_FORMATS = {"jax": serving.export_model, "onnx": onnx_export.export_model}
_FORMAT = flags.DEFINE_enum(
    "format", "jax", list(_FORMATS), "jax: feature_extractor.jax "
    "(jax.export); onnx: feature_extractor.onnx (ONNX Runtime and other "
    "ONNX runtimes; needs pip install '.[onnx]').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  console.start_command_log("export", flags.FLAGS["verbosity"].present)
  try:
    atomic.refuse_to_clobber(_OUT.value, overwrite=_OVERWRITE.value,
                             folder=True)
    model, variables, info = loading.load_model(_MODEL.value, _WHICH.value)
    description = _FORMATS[_FORMAT.value](model, variables, info, _OUT.value,
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
