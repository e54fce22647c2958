"""Copying trained parts between Flax variable trees of different models.

ImageNet classifier -> ReID extractor (phase 1 starts from ImageNet
weights) and teacher -> student (SPEC 3's option: the student's extractor
starts from the phase-1 teacher). Every part of an extractor except its
`head` (the FC block, trained from scratch) has the same path in the
ImageNet classifier: `backbone` + `incre_modules` for HRNet-ReID, also
`downsamp_modules_*` + `final_layer` with HRNet's ImageNet head, `backbone`
for ResNet-50. So a copy is a swap of those subtrees, every path and shape
checked.
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
  """Extractor variables with everything but the head from the classifier.

  Args:
    classifier_variables: {'params', 'batch_stats'} of an HRNetClassifier
      (for HRNetReID, either head kind) or a ResNet50Classifier (for
      ResNet50ReID).
    reid_variables: the extractor's variables (its `head` is kept).

  Returns:
    New variables (the inputs are not modified).
  """
  return _copy_shared(classifier_variables, reid_variables, (),
                      "reid_from_imagenet")


def student_from_teacher(teacher_variables: Variables,
                         student_variables: Variables) -> Variables:
  """Student variables whose extractor, but its head, is the teacher's.

  Args:
    teacher_variables: the teacher extractor's {'params', 'batch_stats'}.
    student_variables: the student's variables (its `sr` and `reid/head`
      kept).

  Returns:
    New variables (the inputs are not modified).
  """
  return _copy_shared(teacher_variables, student_variables, ("reid",),
                      "student_from_teacher")
