"""The layout and split checks the readers share, and their messages.

Messages name the offending path, file or identities and, for layout errors,
show the folder tree the reader expects (errors are in data_pipelines.errors).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Optional

from data_pipelines.errors import (BuildDirError, DatasetLayoutError,
                                   DatasetNotFoundError, EmptySplitError,
                                   FileNameError, SplitError)
from data_pipelines.records import Benchmark, ImageRecord

# Other files in a split folder (Thumbs.db, readme.txt) are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_names(names: Sequence[object], limit: int = 10) -> str:
  """The first `limit` names, comma-separated, then "(and N more)"."""
  shown = ", ".join(str(n) for n in names[:limit])
  if len(names) > limit:
    shown += f" (and {len(names) - limit} more)"
  return shown


def layout_error(root: str, problem: str, tree: str,
                 is_root: Optional[Callable[[str], bool]] = None
                 ) -> DatasetLayoutError:
  """The error saying `problem`, what `root` holds and the expected `tree`.

  The first sub-folder of `root` for which `is_root` holds is suggested as
  the root (the user pointed at its parent).
  """
  try:
    entries = [os.path.join(root, e) for e in sorted(os.listdir(root))]
  except OSError as e:
    entries, found = [], f"(cannot list: {e})"
  else:
    found = list_names([os.path.basename(e) + "/" * os.path.isdir(e)
                        for e in entries]) or "(empty)"
  hint = next((f"\nDid you mean root={sub} ?" for sub in entries
               if is_root and os.path.isdir(sub) and is_root(sub)), "")
  return DatasetLayoutError(
      f"{problem}.\nFound: {found}\nExpected:\n{tree}{hint}")


def require_root(root: str, tree: str, dataset: str = "",
                 entries: Sequence[str] = ()) -> str:
  """The absolute dataset root, checked to be a folder holding `entries`.

  Args:
    root: the folder the user gave.
    tree: the expected layout, shown in messages.
    dataset: the dataset's name, for messages.
    entries: names (folders or files) that must exist directly in `root`.

  Returns:
    The absolute path of `root`.

  Raises:
    DatasetNotFoundError: `root` is missing or not a folder.
    DatasetLayoutError: an entry is missing; a sub-folder holding them all
      is suggested.
  """
  if not root:
    raise DatasetNotFoundError(
        f"No dataset root given; expected a folder like:\n{tree}")
  path = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(path):
    what = "is not a folder" if os.path.exists(path) else "does not exist"
    raise DatasetNotFoundError(
        f"Dataset root {path} {what}; expected a folder like:\n{tree}")
  missing = [e for e in entries if not os.path.exists(os.path.join(path, e))]
  if missing:
    raise layout_error(
        path, f"{path} is not a {dataset} folder: missing "
        f"{list_names(missing)}", tree,
        lambda sub: all(os.path.exists(os.path.join(sub, e)) for e in entries))
  return path


def list_images(folder: str) -> list[str]:
  """Sorted names of the image files directly in `folder`, hidden ones not."""
  return sorted(
      n for n in os.listdir(folder)
      if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
      and os.path.isfile(os.path.join(folder, n)))


def raise_unparsable(folder: str, bad_names: Sequence[str], rule: str,
                     tree: str) -> None:
  """Raises one FileNameError listing `bad_names` of `folder`, if any."""
  if bad_names:
    raise FileNameError(
        f"{len(bad_names)} file name(s) in {folder} do not follow {rule}: "
        f"{list_names(list(bad_names))}\nExpected:\n{tree}")


def require_nonempty(split_name: str, records: Sequence[object],
                     dataset: str) -> None:
  """Raises EmptySplitError naming the split when `records` is empty."""
  if not records:
    raise EmptySplitError(f"{dataset}: the {split_name} split has no images.")


def single_shot(name: str, train: Iterable[ImageRecord],
                query: Iterable[ImageRecord],
                gallery: Iterable[ImageRecord]) -> Benchmark:
  """A single-shot Benchmark, each split checked to be non-empty."""
  splits = {"train": tuple(train), "query": tuple(query),
            "gallery": tuple(gallery)}
  for split, records in splits.items():
    require_nonempty(split, records, name)
  return Benchmark(name, protocol="single_shot", **splits)


def known_ids(test_ids: Iterable[int], known: Iterable[int], dataset: str,
              unknown_means: str = "not in the data") -> set[int]:
  """The test identities as a set; SplitError names any not in `known`."""
  test = set(test_ids)
  unknown = sorted(test - set(known))
  if unknown:
    raise SplitError(f"{dataset} test identities {unknown_means}: "
                     f"{list_names(unknown)}")
  return test


def check_gallery_matches(query: Iterable[ImageRecord],
                          gallery: Iterable[ImageRecord], dataset: str, *,
                          by_image: bool = False) -> None:
  """Raises SplitError naming the query identities without a gallery match.

  A match is a gallery image of the identity from another camera (torchreid
  drops those of the query's identity and camera), or with `by_image` (data
  without cameras) any image but the query itself. A query identity without
  one could only be skipped, silently changing the protocol.
  """
  key = (lambda r: r.hr_path) if by_image else (lambda r: r.camid)
  gallery_keys: dict[int, set[object]] = {}
  for r in gallery:
    gallery_keys.setdefault(r.pid, set()).add(key(r))
  unmatched = sorted({r.pid for r in query
                      if not gallery_keys.get(r.pid, set()) - {key(r)}})
  if unmatched:
    removed = ("other than the query itself" if by_image
               else "from another camera")
    raise SplitError(
        f"{dataset}: {len(unmatched)} query identities have no gallery image "
        f"{removed}: {list_names(unmatched)}")


def train_test_overlap(benchmark: Benchmark) -> list[int]:
  """The training identities that also appear in the query or gallery
  split (the MLR protocols, and every published split, keep them apart)."""
  test = {r.pid for r in benchmark.query} | {r.pid for r in benchmark.gallery}
  return sorted({r.pid for r in benchmark.train} & test)


def root_tag(root: str) -> str:
  """'root' and 8 hex digits of the dataset folder's real path: a build of
  one copy of a dataset is never taken for another's."""
  path = os.path.realpath(os.path.expanduser(root))
  return "root" + hashlib.sha256(path.encode()).hexdigest()[:8]


def is_inside(path: str, root: str) -> bool:
  """Whether `path` is `root` or lies under it (links resolved)."""
  path, root = os.path.realpath(path), os.path.realpath(root)
  return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def require_outside(build_dir: str, roots: Iterable[str]) -> None:
  """Raises BuildDirError when `build_dir` lies inside one of `roots`."""
  for root in roots:
    if root and is_inside(build_dir, root):
      raise BuildDirError(
          f"build_dir {build_dir} lies inside the dataset folder {root}; "
          f"built data must go elsewhere (the dataset is never modified).")
