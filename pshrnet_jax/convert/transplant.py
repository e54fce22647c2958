"""Copying trained parts between Flax variable trees of different models.

ImageNet HRNet-W*-C -> HRNet-ReID (phase 1 starts from ImageNet weights) and
teacher -> student (SPEC 3's option: the student's HRNet-ReID starts from the
phase-1 teacher). The backbone and incre_modules have the same paths in all
three models, so a copy is a subtree swap with every path and shape checked.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from pshrnet_jax.errors import ConversionError

Variables = dict[str, Any]

_SHARED = ("backbone", "incre_modules")


def _shape(leaf: Any) -> tuple[int, ...]:
  # Arrays, or jax.ShapeDtypeStruct when only the shapes are checked.
  return tuple(getattr(leaf, "shape", np.shape(leaf)))


def _copy_shared(src: Variables, dst: Variables, dst_root: tuple[str, ...],
                 what: str) -> Variables:
  """`dst` with its backbone + incre_modules (params, batch_stats) from `src`."""
  out = dict(dst)
  for collection in ("params", "batch_stats"):
    if collection not in src or collection not in dst:
      raise ConversionError(f"{what}: both sides need {collection!r} (got "
                            f"{sorted(src)} and {sorted(dst)})")
    out[collection] = node = dict(dst[collection])
    for p in dst_root:
      node[p] = dict(node[p])
      node = node[p]
    for name in _SHARED:
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
  """HRNetReID variables with backbone + incre_modules from an HRNetClassifier.

  Args:
    classifier_variables: {'params', 'batch_stats'} of an HRNetClassifier.
    reid_variables: an HRNetReID's variables (its `head` is kept).

  Returns:
    New variables (the inputs are not modified).
  """
  return _copy_shared(classifier_variables, reid_variables, (),
                      "reid_from_imagenet")


def student_from_teacher(teacher_variables: Variables,
                         student_variables: Variables) -> Variables:
  """PSHRNet variables whose `reid` backbone + incre_modules are the teacher's.

  Args:
    teacher_variables: an HRNetReID's {'params', 'batch_stats'}.
    student_variables: a PSHRNet's variables (its `sr` and ReID head kept).

  Returns:
    New variables (the inputs are not modified).
  """
  return _copy_shared(teacher_variables, student_variables, ("reid",),
                      "student_from_teacher")
