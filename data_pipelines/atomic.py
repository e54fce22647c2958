"""Write a folder completely, then rename it into place.

Every writer of a folder that other code trusts once it exists (exported
variables, converted weights, MLR builds, the CUHK03 extraction, the demo
set) goes through `atomic_directory`. A crash or an exception leaves the
target as it was (absent, or the previous version).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


class TargetExistsError(FileExistsError):
  """Another writer put the target in place while this one was writing."""


def _is_empty_dir(path: str) -> bool:
  return os.path.isdir(path) and not os.listdir(path)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, *,
                     replace: bool = False) -> Iterator[str]:
  """Yields a temporary folder that becomes `target` when the block succeeds.

  Args:
    target: the folder to create. It may not exist yet, or be an empty
      folder; with `replace`, an existing folder is replaced as a whole.
    replace: swap an existing `target` for the new content. The old folder
      is moved aside, the new one renamed in, then the old one deleted, so
      `target` is never a mix of both.

  Yields:
    The temporary folder (a sibling of `target`, same file system) to write
    into.

  Raises:
    FileExistsError: `target` exists, is not an empty folder, and `replace`
      is False (raised before anything is written).
    TargetExistsError: `target` appeared while writing (another process
      finished the same job first); the temporary folder is removed, and
      the caller decides whether the other result can be used.
  """
  target = os.path.abspath(os.fspath(target))
  if (os.path.lexists(target) and not replace
      and not _is_empty_dir(target)):
    raise FileExistsError(f"{target} exists and is not an empty directory; "
                          "refusing to overwrite it")
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  name = os.path.basename(target)
  tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
  try:
    yield tmp
    os.chmod(tmp, 0o755)  # mkdtemp makes it private to this user.
    if replace and os.path.lexists(target) and not _is_empty_dir(target):
      old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
      aside = os.path.join(old, name)
      os.rename(target, aside)
      try:
        os.rename(tmp, target)
      except BaseException:
        os.rename(aside, target)  # Put the previous version back.
        raise
      finally:
        shutil.rmtree(old, ignore_errors=True)
      return
    if _is_empty_dir(target):
      os.rmdir(target)  # rename() does not replace a folder everywhere.
    try:
      os.rename(tmp, target)
    except OSError as e:
      if os.path.lexists(target):
        raise TargetExistsError(
            f"{target} was created by another writer meanwhile") from e
      raise
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
