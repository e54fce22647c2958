r"""Features of a folder of photos, written once to be searched many times.

    python -m pshrnet_jax.extract --model=workdirs/demo --images=DIR \
        --out=gallery_features.npz [--which=student|teacher] [--batch_size=32] \
        [--overwrite]

Every image under DIR is decoded as in training; unreadable files are
listed and skipped. An existing --out file is refused, before any work,
unless --overwrite is given; it is replaced only once the new one is
complete. The .npz holds `features` (N, D), `paths` (N,) and the
model's identity, which `python -m pshrnet_jax.search --gallery=` checks.
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
_IMAGES = flags.DEFINE_string("images", None, "Folder of images.",
                              required=True)
_OUT = flags.DEFINE_string("out", None, "Features file to write (.npz).",
                           required=True)
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace an existing --out file.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per batch.",
                               lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  console.start_command_log("extract", flags.FLAGS["verbosity"].present)
  try:
    atomic.refuse_to_clobber(_OUT.value, overwrite=_OVERWRITE.value)
    # JAX and the model code once the flags and --out have passed: --help,
    # a bad flag and a refused file answer at once.
    from pshrnet_jax.inference import gallery  # pylint: disable=g-import-not-at-top
    from pshrnet_jax.inference import loading  # pylint: disable=g-import-not-at-top
    model, variables, info = loading.load_model(_MODEL.value, _WHICH.value)
    paths = gallery.list_images(_IMAGES.value)
    embedded = gallery.embed(model, variables, info, paths,
                             batch_size=_BATCH.value)
    gallery.save_features(_OUT.value, embedded, info)
  except errors.INPUT_ERRORS as e:
    return console.fatal(e)
  for path, reason in embedded.failed:
    console.say(f"skipped {path}: {reason}")
  console.say(f"{len(embedded.paths)} images -> {_OUT.value} "
              f"({embedded.features.shape[1]}-d features, {info.kind} of "
              f"{info.path}; {len(embedded.failed)} skipped)")
  return 0


def cli():
  """The console script (pyproject.toml)."""
  cli_lib.run(main, __name__)


if __name__ == "__main__":
  cli()
