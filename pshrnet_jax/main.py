r"""PS-HRNet training and evaluation.

    python -m pshrnet_jax.main --config=configs/mlr_cuhk03.py --workdir=DIR \
        [--config.mode=all|phase1|phase2|eval] [--config.a.b=value ...] [-v]

The released-code preset is chosen with the config argument,
`--config=configs/mlr_cuhk03.py:released_code`. A config is a file; where
no such file exists, a bare name (`--config=demo`) or `configs/<name>.py`
means that config of the installed package `configs` (so README's commands
work from any folder once the package is installed); a file of that path in
the working directory comes first. The terminal shows a header
per phase, a progress bar and the results; everything logged (Orbax, absl
INFO) goes to WORKDIR/log.txt, and to the terminal too with `-v` (or
`--verbosity=1`).
"""

import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from data_pipelines import cli as cli_lib
from pshrnet_jax import console
from pshrnet_jax import errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), or the name of an installed "
    "one (demo, mlr_cuhk03, ...), optionally with ':preset'.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/default", "Where checkpoints, logs and results go.")


def _exit_with(message: BaseException | str) -> None:
  sys.exit(console.fatal(message))


def _config_argument(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _check_config_file(argv: list[str]) -> None:
  """Runs --config=FILE[:preset] once here, so that a missing file, a syntax
  error, no get_config() or an unknown preset is one FATAL line
  (ml_collections raises each differently, some only when the config is
  first used, some with a traceback in the message)."""
  arg = _config_argument(argv)
  if arg is None:
    return
  path, colon, preset = arg.partition(":")
  where = f"--config={arg}"
  if not os.path.isfile(path):
    _exit_with(f"{where}: {path} "
               + ("is not a file." if os.path.exists(path) else
                  "does not exist (configs/*.py are the benchmarks' "
                  "configs)."))
  try:
    spec = importlib.util.spec_from_file_location("_checked_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except SyntaxError as e:
    _exit_with(f"{where}: syntax error in {path}, line {e.lineno}: {e.msg}.")
  except Exception as e:  # pylint: disable=broad-except
    _exit_with(f"{where}: running {path} failed: {type(e).__name__}: {e}")
  if not callable(getattr(module, "get_config", None)):
    _exit_with(f"{where}: {path} defines no get_config(), so it is not a "
               "config file (see configs/*.py).")
  call = f"get_config({preset!r})" if colon else "get_config()"
  try:
    module.get_config(*([preset] if colon else []))
  except Exception as e:  # pylint: disable=broad-except
    _exit_with(f"{where}: {call} failed: {type(e).__name__}: {e}")


def _refuse_repeated_tuples(argv: list[str]) -> None:
  """A tuple field given twice: ml_collections joins the values (a list
  with duplicates), which no one means."""
  keys = [a.split("=", 1)[0][len("--config."):] for a in argv[1:]
          if a.startswith("--config.")]
  for key in sorted({k for k in keys if keys.count(k) > 1}):
    value = _CONFIG.value
    for name in key.split("."):
      value = value[name]
    if isinstance(value, (tuple, list)):
      _exit_with(f"--config.{key} was given {keys.count(key)} times, which "
                 f"joins the values into {tuple(value)!r}; give it once, "
                 "with the whole tuple.")

def _installed_configs() -> tuple[str, dict[str, str]]:
  """The folder of the package `configs` and its configs' paths by name
  (found without importing it)."""
  spec = importlib.util.find_spec("configs")
  if spec is None or not spec.submodule_search_locations:
    return "", {}
  folder = spec.submodule_search_locations[0]
  return folder, {n[:-3]: os.path.join(folder, n)
                  for n in sorted(os.listdir(folder))
                  if n.endswith(".py") and n[0] != "_" and n != "base.py"}


def _resolve_config(value: str) -> str:
  """`--config`'s value, with the installed config's path for a name
  (`demo`, `demo.py`) or a `configs/<name>.py` that is not a file here."""
  path, colon, preset = value.partition(":")
  if os.path.exists(path):
    return value
  folder, name = os.path.split(path)
  name = name[:-len(".py")] if name.endswith(".py") else name
  installed = _installed_configs()[1]
  if folder in ("", "configs") and name in installed:
    return installed[name] + colon + preset
  _exit_with(f"--config={value}: no such file, nor an installed config of "
             f"that name (in {_installed_configs()[0] or 'no configs package'}"
             f": {', '.join(installed)})")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, naming unknown --config.* fields (ml_collections
  raises a bare AttributeError('nonexistent') for them), and config files
  and tuple flags it would take badly."""
  # A bare -v (absl's -v takes a number) means: show INFO records too.
  argv = [a if a != "-v" else "--verbosity=1" for a in argv]
  argv = [f"--config={_resolve_config(a[len('--config='):])}"
          if a.startswith("--config=") else a for a in argv]
  _check_config_file(argv)
  try:
    rest = flags.FLAGS(argv)
    _refuse_repeated_tuples(argv)
    return rest
  except flags.Error as e:
    _exit_with(f"Flags parsing error: {e}\nPass --helpshort or --helpfull "
               "to see help on flags.")
  except (AttributeError, KeyError) as e:
    overrides = [a.split("=", 1)[0] for a in argv[1:]
                 if a.startswith("--config.")]
    _exit_with(f"Flags parsing error: the config has no field {e} (in "
               f"{', '.join(overrides) or 'the --config overrides'}); "
               "see configs/base.py for the fields that exist.")


def _initialize_distributed(config) -> None:
  """jax.distributed.initialize with the config's values; unset ones ('', 0,
  -1) are left to JAX (JAX_COORDINATOR_ADDRESS etc., SLURM and others)."""
  kwargs = {}
  if config.coordinator_address:
    kwargs["coordinator_address"] = config.coordinator_address
  if config.num_processes:
    kwargs["num_processes"] = config.num_processes
  if config.process_id >= 0:
    kwargs["process_id"] = config.process_id
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
        initialization_timeout=config.distributed_timeout_s, **kwargs)
  except (RuntimeError, ValueError) as e:
    _exit_with(f"jax.distributed.initialize({kwargs}) failed: {e}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<benchmark>.py is required.")
  preset_arg = (flags.FLAGS["config"].config_filename or "")
  preset = preset_arg.split(":", 1)[1] if ":" in preset_arg else "paper"
  if config.preset != preset:
    _exit_with(
        f"--config.preset={config.preset} cannot re-apply a preset after the "
        "config was built; use "
        f"--config={preset_arg.split(':', 1)[0]}:{config.preset} instead.")
  # JAX and the library after the flags: --help and a bad flag answer at
  # once, without the seconds JAX and Flax take to import.
  import jax  # pylint: disable=g-import-not-at-top
  from pshrnet_jax import driver  # pylint: disable=g-import-not-at-top
  # Everything to WORKDIR/log.txt; to the terminal only warnings and worse,
  # unless --verbosity (-v) was given.
  console.route_logs(flags.FLAGS["verbosity"].present)
  if config.distributed:
    _initialize_distributed(config)
  if config.compilation_cache_dir:
    # Compiling the steps takes minutes on a CPU; a second run (or a resume)
    # reuses the executables from here.
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(config.compilation_cache_dir))
    # Every program, even the hundreds of small ones eager initialisation
    # compiles: together they cost more than the training step.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s).",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  try:
    driver.run(config, _WORKDIR.value)
  except errors.INPUT_ERRORS as e:
    console.finish(console.fatal(e))
  except errors.Preempted as e:
    sys.stderr.write(f"PREEMPTED {e}\n")
    console.finish(e.exit_code)


def cli():
  """The console script (pyproject.toml)."""
  cli_lib.run(main, __name__, flags_parser=_parse_flags)


if __name__ == "__main__":
  cli()
