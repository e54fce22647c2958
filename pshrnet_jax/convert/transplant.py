"""ImageNet classifier -> ReID extractor and teacher -> student weight copies.

Every part of an extractor but its `head` (trained from scratch) has the same
path in its ImageNet classifier, so a copy swaps those subtrees, every path
and shape checked.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from pshrnet_jax.errors import ConversionError

Variables = dict[str, Any]

# The extractor's part that is trained from scratch.
_HEAD = "head"


def _shape(leaf: Any) -> tuple[int, ...]:
  # Arrays, or jax.ShapeDtypeStruct when only the shapes are checked.
  return tuple(getattr(leaf, "shape", np.shape(leaf)))


def _copy_shared(src: Variables, dst: Variables, dst_root: tuple[str, ...],
                 what: str) -> Variables:
  """`dst` with every part but its head (params, batch_stats) from `src`."""
  out = dict(dst)
  shared = None
  for collection in ("params", "batch_stats"):
    if collection not in src or collection not in dst:
      raise ConversionError(f"{what}: both sides need {collection!r} (got "
                            f"{sorted(src)} and {sorted(dst)})")
    out[collection] = node = dict(dst[collection])
    for p in dst_root:
      node[p] = dict(node[p])
      node = node[p]
    if shared is None:
      shared = sorted(name for name in node if name != _HEAD)
    for name in shared:
      if name not in node and name not in src[collection]:
        continue  # A part without BatchNorm has no batch_stats.
      if name not in src[collection]:
        raise ConversionError(
            f"{what}: {collection}/{name} is only in the target (the source "
            f"has {sorted(src[collection])}); weights of another model?")
      theirs = dict(jax.tree_util.tree_leaves_with_path(
          src[collection].get(name, {})))
      ours = dict(jax.tree_util.tree_leaves_with_path(node.get(name, {})))
      where = lambda path: f"{collection}/{name}{jax.tree_util.keystr(path)}"
      for path in sorted(set(theirs) ^ set(ours), key=str):
        raise ConversionError(f"{what}: {where(path)} is only in the "
                              f"{'source' if path in theirs else 'target'}")
      for path, leaf in ours.items():
        if _shape(leaf) != _shape(theirs[path]):
          raise ConversionError(
              f"{what}: {where(path)} has shape {_shape(theirs[path])} in "
              f"the source, {_shape(leaf)} in the target")
      node[name] = src[collection][name]
  return out


def reid_from_imagenet(classifier_variables: Variables,
                       reid_variables: Variables) -> Variables:
  """New extractor variables with all but the `head` from its ImageNet
  classifier's (HRNetClassifier, ResNet50Classifier)."""
  return _copy_shared(classifier_variables, reid_variables, (),
                      "reid_from_imagenet")


def student_from_teacher(teacher_variables: Variables,
                         student_variables: Variables) -> Variables:
  """New student variables whose extractor, but its head, is the teacher's
  (`sr` and `reid/head` kept)."""
  return _copy_shared(teacher_variables, student_variables, ("reid",),
                      "student_from_teacher")
