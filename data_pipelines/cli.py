"""Starting an absl command, as `python -m` or as an installed console
script (pyproject.toml): every command's `cli()` calls `run`. A leaf: it
imports nothing from the project."""

from __future__ import annotations

import sys
from typing import Any, Callable

from absl import app
from absl import flags


def run(main: Callable[[list[str]], Any], module: str, **kwargs) -> None:
  """`app.run(main, **kwargs)`, with `--help` listing the flags `module`
  defined: absl lists those of the module it names by sys.argv[0], which
  is the command's own file under `python -m` but the wrapper script pip
  writes for a console script."""
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, **kwargs)
