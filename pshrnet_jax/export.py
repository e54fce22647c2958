r"""Export a trained feature extractor for serving (jax.export).

    python -m pshrnet_jax.export --model=workdirs/demo --out=exported/demo \
        [--which=student|teacher]

writes OUT/feature_extractor.jax and OUT/feature_extractor.json; running it
needs only jax (pshrnet_jax/inference/serving.py).
"""

from absl import app
from absl import flags

from pshrnet_jax import console
from pshrnet_jax import errors
from pshrnet_jax.inference import loading
from pshrnet_jax.inference import serving

_MODEL, _WHICH = loading.define_flags()
_OUT = flags.DEFINE_string("out", None, "Folder to create.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    model, variables, info = loading.load_model(_MODEL.value, _WHICH.value)
    description = serving.export_model(model, variables, info, _OUT.value)
  except (*errors.INPUT_ERRORS, FileExistsError) as e:
    return console.fatal(e)
  height, width, _ = description["input"]["shape"][1:]
  console.say(f"Exported the {info.kind} of {info.path} to {_OUT.value}: "
              f"uint8 (batch, {height}, {width}, 3) -> features (batch, "
              f"{description['outputs']['features']['shape'][1]}) and SR.")
  return 0


def cli():
  """The console script (pyproject.toml)."""
  app.run(main)


if __name__ == "__main__":
  cli()
