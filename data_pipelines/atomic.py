"""Write a folder or a file completely, then rename it into place.

Every writer of a folder that other code trusts once it exists (exported
variables, converted weights, MLR builds, the CUHK03 extraction, the demo
set) goes through `atomic_directory`, and every command's output file
through `atomic_file`. A crash or an exception leaves the target as it was
(absent, or the previous version), and no temporary file behind.
`refuse_to_clobber` is the commands' check, before any work, that they
would not write over what a user has (unless told to, with --overwrite).
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


def refuse_to_clobber(target: str | os.PathLike, *, overwrite: bool,
                      folder: bool = False, flag: str = "--out") -> None:
  """Raises FileExistsError when writing `target` would replace something:
  an existing file (with `folder`, a non-empty folder) unless `overwrite`,
  and a path of the other kind (a folder where a file goes) always.

  Args:
    target: the path a command is about to write.
    overwrite: the command's --overwrite.
    folder: whether `target` is a folder the command fills.
    flag: the command's flag that names `target`, for the message ('': the
      path alone).
  """
  target = os.fspath(target)
  if not os.path.lexists(target):
    return
  what = f"{flag}={target}" if flag else target
  if os.path.isdir(target) != folder:
    raise FileExistsError(
        f"{what} is {'a file' if folder else 'a folder'}; expected "
        f"{'a folder' if folder else 'a file'} (or nothing) there.")
  if folder and not os.listdir(target):
    return
  if not overwrite:
    raise FileExistsError(
        f"{what} exists; refusing to overwrite it (pass --overwrite to "
        "replace it, or choose another path).")


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path (beside `target`, the same extension) that
  replaces `target` when the block succeeds; on any failure it is removed
  and `target` is left as it was."""
  target = os.path.abspath(os.fspath(target))
  base, ext = os.path.splitext(os.path.basename(target))
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-", suffix=ext,
                             dir=os.path.dirname(target))
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o644)  # mkstemp makes it private to this user.
    os.replace(tmp, target)
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)


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
