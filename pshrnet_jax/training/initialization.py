"""Where a phase's first weights come from, in this order: resume from the
workdir (done by the loop), else the configured initial weights (ImageNet
HRNet-W*-C for phase 1 and the student's HRNet, or the phase-1 teacher),
else random.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from pshrnet_jax import convert
from pshrnet_jax import workdir_layout
from pshrnet_jax.errors import MissingTeacherError


def random_variables(model, seed: int,
                     image_size: tuple[int, int]) -> dict[str, Any]:
  """`model.init` on a dummy batch, as host numpy arrays."""
  dummy = jnp.zeros((1, *image_size, 3), jnp.float32)
  # Eagerly, not jitted: XLA:CPU spends minutes compiling one program with
  # every initialiser's RNG, while op-by-op init reuses small cached kernels.
  variables = model.init(jax.random.key(seed), dummy, train=False)
  return jax.tree.map(np.asarray, dict(variables))


def load_init_weights(path: str) -> dict[str, Any]:
  """ImageNet HRNet-W*-C variables from an Orbax dir or a PyTorch .pth."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config.init_from={path} does not exist.")
  if os.path.isdir(path):
    return convert.restore_variables(path)
  return convert.load_torch_hrnet(path)


def restore_teacher(config: ml_collections.ConfigDict,
                    workdir: str) -> dict[str, Any]:
  """The phase-1 teacher's variables (raises MissingTeacherError)."""
  path = workdir_layout.teacher_dir(config, workdir)
  if not os.path.isdir(path):
    raise MissingTeacherError(
        f"Phase 2 needs the phase-1 teacher, but {path} does not exist. Run "
        "phase 1 first (--config.mode=phase1 or all) in this --workdir, or "
        "point --config.teacher_dir at a teacher saved by phase 1.")
  return convert.restore_variables(path)


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
  variables = random_variables(model, config.seed, image_size)
  if phase == "phase2" and config.student_init == "teacher":
    teacher_vars = restore_teacher(config, workdir)
    logging.info("Student HRNet-ReID initialised from the phase-1 teacher.")
    return convert.student_from_teacher(teacher_vars, variables)
  if not config.init_from:
    logging.info("%s: random initialisation (no --config.init_from).", phase)
    return variables
  imagenet = load_init_weights(config.init_from)
  if phase == "phase1":
    logging.info("Teacher initialised from ImageNet HRNet %s.",
                 config.init_from)
    return convert.reid_from_imagenet(imagenet, variables)
  logging.info("Student HRNet-ReID initialised from ImageNet HRNet %s.",
               config.init_from)
  reid = {k: v["reid"] for k, v in variables.items() if "reid" in v}
  reid = convert.reid_from_imagenet(imagenet, reid)
  return {k: dict(v, reid=reid[k]) if k in reid else v
          for k, v in variables.items()}
