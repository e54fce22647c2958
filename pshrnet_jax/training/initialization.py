"""Where a phase's first weights come from, in this order: resume from the
workdir (done by the loop), else the configured initial weights (ImageNet
HRNet-W*-C, or torchvision's ResNet-50 for backbone=resnet50, for phase 1
and the student's extractor; or the phase-1 teacher), else random.

`check_init_from` runs before anything else of a run: a benchmark config
(`init_from_required`) refuses to train from random weights unless
`--config.init_from=none` says so.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from pshrnet_jax import convert
from pshrnet_jax import workdir_layout
from pshrnet_jax.errors import ConfigError
from pshrnet_jax.errors import MissingTeacherError
from pshrnet_jax.models import factory

# `--config.init_from=none`: random initialisation, on purpose.
INIT_FROM_NONE = "none"


def _imagenet_weights(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """(what the ImageNet weights are, the convert script's --kind)."""
  if config.model.backbone == "resnet50":
    return "torchvision ResNet-50", "resnet50"
  return f"HRNet-W{config.model.width}-C", "hrnet"


def check_init_from(config: ml_collections.ConfigDict) -> None:
  """Refuses to start from random weights by accident (SPEC 3).

  With `config.init_from_required` (every benchmark config), a run that
  trains phase 1, or phase 2 with `student_init=imagenet`, needs
  `--config.init_from`: a path, or 'none' to train from random weights on
  purpose. Reads nothing and writes nothing.

  Args:
    config: the run config.

  Raises:
    ConfigError: one line saying what needs the weights and how to give
      them (or to opt out); or an unknown backbone, head or SR module
      (checked first: the message names the backbone's weights).
  """
  factory.check_model_config(config.model)
  if not config.init_from_required or config.init_from:
    return
  needs = []
  if config.mode in ("phase1", "all"):
    needs.append("phase 1 (the teacher)")
  if (config.mode in ("phase2", "all") and not config.hr_only
      and config.student_init == "imagenet"):
    needs.append("phase 2's student extractor (student_init=imagenet)")
  if not needs:
    return
  weights, kind = _imagenet_weights(config)
  raise ConfigError(
      f"{' and '.join(needs)} should start from ImageNet {weights} weights "
      "(SPEC 3), but --config.init_from is not set. Convert them with "
      f"`python scripts/convert_pytorch_hrnet.py --kind={kind} --input=FILE "
      "--output=DIR` and pass --config.init_from=DIR (or the .pth file), or "
      f"pass --config.init_from={INIT_FROM_NONE} to train from random "
      "weights on purpose.")


def random_variables(model, seed: int,
                     image_size: tuple[int, int]) -> dict[str, Any]:
  """The model's initial variables (as `model.init` gives them), as host
  numpy arrays."""
  dummy = jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
  # Eagerly, not jitted: XLA:CPU spends minutes compiling one program with
  # every initialiser's RNG, while op-by-op init reuses small cached
  # kernels. `lazy_init` runs only the initialisers, not the forward pass
  # on the dummy batch: the same values, a third fewer programs to compile
  # (the demo's teacher: 191 instead of 269, 13 s instead of 16 s cold).
  variables = model.lazy_init(jax.random.key(seed), dummy, train=False)
  return jax.tree.map(np.asarray, dict(variables))


def load_init_weights(path: str, backbone: str = "hrnet") -> dict[str, Any]:
  """ImageNet classifier variables from an Orbax dir or a PyTorch .pth.

  Args:
    path: a folder written by scripts/convert_pytorch_hrnet.py, or the .pth
      (HRNet-W*-C; torchvision's ResNet-50 for backbone 'resnet50').
    backbone: `config.model.backbone`.

  Returns:
    The classifier's {'params', 'batch_stats'}.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config.init_from={path} does not exist.")
  if os.path.isdir(path):
    return convert.restore_variables(path)
  if backbone == "resnet50":
    return convert.load_torch_resnet(path)
  return convert.load_torch_hrnet(path)


def require_teacher(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The phase-1 teacher's folder (raises MissingTeacherError if absent)."""
  path = workdir_layout.teacher_dir(config, workdir)
  if not os.path.isdir(path):
    raise MissingTeacherError(
        f"Phase 2 needs the phase-1 teacher, but {path} does not exist. Run "
        "phase 1 first (--config.mode=phase1 or all) in this --workdir, or "
        "point --config.teacher_dir at a teacher saved by phase 1.")
  return path


def restore_teacher(config: ml_collections.ConfigDict,
                    workdir: str) -> dict[str, Any]:
  """The phase-1 teacher's variables (raises MissingTeacherError)."""
  return convert.restore_variables(require_teacher(config, workdir))


def check_fits(variables: Mapping[str, Any], model, image_size: tuple[int, int],
               what: str) -> None:
  """Raises ConfigError unless `variables` have exactly `model`'s shapes.

  Args:
    variables: loaded variables (e.g. the phase-1 teacher).
    model: the Flax module they are meant for.
    image_size: (H, W) of the network input.
    what: names the variables' origin in the message (flag and path).
  """
  expected = factory.abstract_variables(model, (1, *image_size, 3))
  have = {jax.tree_util.keystr(p): np.shape(x) for p, x in
          jax.tree_util.tree_leaves_with_path(dict(variables))}
  want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in
          jax.tree_util.tree_leaves_with_path(dict(expected))}
  problems = [f"{k} is missing" for k in sorted(set(want) - set(have))]
  problems += [f"{k} is not in the model" for k in sorted(set(have) - set(want))]
  problems += [f"{k} has shape {have[k]}, the model expects {want[k]}"
               for k in sorted(set(have) & set(want)) if have[k] != want[k]]
  if problems:
    raise ConfigError(
        f"{what} does not fit the configured model (--config.model.*): "
        f"{'; '.join(problems[:3])}"
        + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        + ". Use the model settings it was trained with.")


def initial_variables(config: ml_collections.ConfigDict, phase: str, model,
                      image_size: tuple[int, int],
                      workdir: str) -> dict[str, Any]:
  """Random init, then the configured initial weights on top.

  Args:
    config: the run config.
    phase: 'phase1' (the teacher) or 'phase2' (the student).
    model: the phase's Flax module.
    image_size: (H, W) of the network input.
    workdir: the run's workdir (for the phase-1 teacher).

  Returns:
    {'params', 'batch_stats'} as host arrays.
  """
  imagenet = None
  if config.init_from not in ("", INIT_FROM_NONE) and not (
      phase == "phase2" and config.student_init == "teacher"):
    # Shapes first: a checkpoint of another width fails before the (slow)
    # random initialisation.
    imagenet = load_init_weights(config.init_from, config.model.backbone)
    abstract = factory.abstract_variables(model, (1, *image_size, 3))
    _transplant_imagenet(imagenet, abstract, phase)
  variables = random_variables(model, config.seed, image_size)
  if phase == "phase2" and config.student_init == "teacher":
    teacher_vars = restore_teacher(config, workdir)
    logging.info("Student HRNet-ReID initialised from the phase-1 teacher.")
    return convert.student_from_teacher(teacher_vars, variables)
  if imagenet is None:
    logging.info("%s: random initialisation (--config.init_from=%s).", phase,
                 config.init_from or "''")
    return variables
  logging.info("%s initialised from ImageNet %s %s.",
               "Teacher" if phase == "phase1" else "Student extractor",
               _imagenet_weights(config)[0],
               config.init_from)
  return _transplant_imagenet(imagenet, variables, phase)


def _transplant_imagenet(imagenet: Mapping[str, Any],
                         variables: Mapping[str, Any],
                         phase: str) -> dict[str, Any]:
  """The teacher's (phase 1) or the student's ReID part's (phase 2)
  backbone and incre_modules from ImageNet weights; checks every shape."""
  if phase == "phase1":
    return convert.reid_from_imagenet(imagenet, dict(variables))
  reid = {k: v["reid"] for k, v in variables.items() if "reid" in v}
  reid = convert.reid_from_imagenet(imagenet, reid)
  return {k: dict(v, reid=reid[k]) if k in reid else v
          for k, v in variables.items()}
