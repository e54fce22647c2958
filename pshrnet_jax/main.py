r"""PS-HRNet training and evaluation.

    python -m pshrnet_jax.main --config=configs/mlr_cuhk03.py --workdir=DIR \
        [--config.mode=all|phase1|phase2|eval] [--config.a.b=value ...]

The released-code preset is chosen with the config argument,
`--config=configs/mlr_cuhk03.py:released_code`.
"""

import os

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from pshrnet_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), optionally with ':preset'.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/default", "Where checkpoints, logs and results go.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<benchmark>.py is required.")
  preset_arg = (flags.FLAGS["config"].config_filename or "")
  preset = preset_arg.split(":", 1)[1] if ":" in preset_arg else "paper"
  if config.preset != preset:
    raise app.UsageError(
        f"--config.preset={config.preset} cannot re-apply a preset after the "
        f"config was built; use --config=FILE:{config.preset} instead.")
  if config.distributed:
    jax.distributed.initialize()
  if config.compilation_cache_dir:
    # Compiling the steps takes minutes on a CPU; a second run (or a resume)
    # reuses the executables from here.
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(config.compilation_cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s).",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  train.run(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
