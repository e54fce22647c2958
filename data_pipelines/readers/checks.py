"""Exception types for bad dataset input, and the checks that raise them.

Every error a user can trigger by pointing a reader at the wrong folder, at a
damaged copy or at an impossible split is a `DatasetError` (a `ValueError`),
so callers can catch one type; a missing root is also a `FileNotFoundError`.
Messages name the offending path, file or identities and, for layout errors,
show the folder tree the reader expects.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Sequence

from data_pipelines.errors import (DatasetLayoutError, DatasetNotFoundError,
                                   EmptySplitError, FileNameError, SplitError)

# File name endings that readers treat as images; anything else in a split
# folder (Thumbs.db, .DS_Store, readme.txt) is ignored, not an error.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# How many offending names a message lists before summarising the rest.
_MAX_LISTED = 10


def list_names(names: Sequence[str], limit: int = _MAX_LISTED) -> str:
  """Formats names for a message: the first `limit`, then a count of the rest.

  Args:
    names: the names (file names, identities) to show.
    limit: how many to show before summarising.

  Returns:
    A comma-separated string such as "a, b, c (and 12 more)".
  """
  shown = ", ".join(str(n) for n in names[:limit])
  if len(names) > limit:
    shown += f" (and {len(names) - limit} more)"
  return shown


def _describe_folder(path: str) -> str:
  """What a folder holds, for error messages: its entries, folders marked /."""
  try:
    entries = sorted(os.listdir(path))
  except OSError as e:
    return f"(cannot list: {e})"
  if not entries:
    return "(empty)"
  shown = [e + ("/" if os.path.isdir(os.path.join(path, e)) else "")
           for e in entries]
  return list_names(shown)


def require_root(root: str, expected_tree: str) -> str:
  """Checks that the dataset root exists and is a folder.

  Args:
    root: the folder the user gave.
    expected_tree: the layout, shown in the message.

  Returns:
    The absolute path of `root`.

  Raises:
    DatasetNotFoundError: `root` is missing or not a folder.
  """
  if not root:
    raise DatasetNotFoundError(
        f"No dataset root given; expected a folder like:\n{expected_tree}")
  path = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(path):
    what = "is not a folder" if os.path.exists(path) else "does not exist"
    raise DatasetNotFoundError(
        f"Dataset root {path} {what}; expected a folder like:\n"
        f"{expected_tree}")
  return path


def require_entries(root: str, entries: Sequence[str], expected_tree: str,
                    dataset: str) -> None:
  """Checks that `root` holds every one of `entries` (folders or files).

  When they are missing but a sub-folder of `root` holds them (the user
  pointed at the parent folder, e.g. `data/` instead of
  `data/Market-1501-v15.09.15/`), the message suggests that sub-folder.

  Args:
    root: the dataset root (absolute).
    entries: names that must exist directly under `root`.
    expected_tree: the layout, shown in the message.
    dataset: the dataset's name, for the message.

  Raises:
    DatasetLayoutError: some entry is missing.
  """
  missing = [e for e in entries if not os.path.exists(os.path.join(root, e))]
  if not missing:
    return
  hint = ""
  try:
    children = sorted(os.listdir(root))
  except OSError:
    children = []
  for child in children:
    sub = os.path.join(root, child)
    if os.path.isdir(sub) and all(
        os.path.exists(os.path.join(sub, e)) for e in entries):
      hint = f"\nDid you mean root={sub} ?"
      break
  raise DatasetLayoutError(
      f"{root} is not a {dataset} folder: missing {list_names(missing)}.\n"
      f"Found: {_describe_folder(root)}\n"
      f"Expected:\n{expected_tree}{hint}")


def list_images(folder: str) -> list[str]:
  """The image file names directly in `folder`, sorted; other files ignored.

  Args:
    folder: an existing folder.

  Returns:
    Sorted base names whose extension is in IMAGE_EXTENSIONS (any case),
    hidden files (".*") excluded.
  """
  return sorted(
      n for n in os.listdir(folder)
      if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
      and os.path.isfile(os.path.join(folder, n)))


def raise_unparsable(folder: str, bad_names: Sequence[str], rule: str,
                     expected_tree: str) -> None:
  """Raises one FileNameError listing every name in `folder` that failed.

  Args:
    folder: the folder holding the files.
    bad_names: the base names that did not parse.
    rule: the naming rule, e.g. "PPPP_cCsS_FFFFFF_BB.jpg".
    expected_tree: the layout, shown in the message.

  Raises:
    FileNameError: always (when `bad_names` is not empty).
  """
  if bad_names:
    raise FileNameError(
        f"{len(bad_names)} file name(s) in {folder} do not follow {rule}: "
        f"{list_names(list(bad_names))}\nExpected:\n{expected_tree}")


def require_nonempty(split_name: str, records: Sequence[object],
                     dataset: str) -> None:
  """Raises EmptySplitError naming the split when `records` is empty."""
  if not records:
    raise EmptySplitError(f"{dataset}: the {split_name} split has no images.")


def check_gallery_matches(query: Iterable[tuple[int, Hashable]],
                          gallery: Iterable[tuple[int, Hashable]],
                          dataset: str, *,
                          removed: str = "from another camera") -> None:
  """Every query identity needs a gallery image of it from another camera.

  This is the match the evaluation counts (torchreid drops gallery images of
  the query's own identity and camera); a query identity without one can only
  be skipped, which silently changes the protocol, so it is an error. For
  data without cameras, pass the image path instead of the camera: then any
  other image of the identity is a match.

  Args:
    query: (pid, camid or image key) of each query image.
    gallery: (pid, camid or image key) of each gallery image.
    dataset: the benchmark name, for the message.
    removed: what a match must be, for the message.

  Raises:
    SplitError: naming the identities without a gallery match.
  """
  gallery_cams: dict[int, set[int]] = {}
  for pid, camid in gallery:
    gallery_cams.setdefault(pid, set()).add(camid)
  unmatched = sorted({
      pid for pid, camid in query
      if not gallery_cams.get(pid, set()) - {camid}})
  if unmatched:
    raise SplitError(
        f"{dataset}: {len(unmatched)} query identities have no gallery image "
        f"{removed}: {list_names(unmatched)}")
