"""A phase's first weights when there is no checkpoint to resume: ImageNet
weights (`config.init_from`) or the phase-1 teacher, else random."""

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
from pshrnet_jax.training import phases
from pshrnet_jax.training.phases import Phase

# `--config.init_from=none`: random initialisation, on purpose.
INIT_FROM_NONE = "none"


def check_init_from(config: ml_collections.ConfigDict) -> None:
  """Refuses to start from random weights by accident (SPEC 3).

  With `config.init_from_required` (every benchmark config), a phase that
  starts from ImageNet weights (the teacher; the student unless
  `student_init=teacher`) needs `--config.init_from`: a path, or 'none'.

  Raises:
    ConfigError: what needs the weights and how to give them (or opt out).
  """
  if not config.init_from_required or config.init_from:
    return
  needs = [f"{p.title}'s {p.role} extractor (student_init=imagenet)"
           if p.student_init else f"{p.title} (the {p.role})"
           for p in phases.to_train(config) if not p.from_teacher(config)]
  if not needs:
    return
  weights, kind = factory.imagenet_weights(config.model)
  raise ConfigError(
      f"{' and '.join(needs)} should start from ImageNet {weights} weights "
      "(SPEC 3), but --config.init_from is not set. Convert them with "
      f"`python -m pshrnet_jax.convert --kind={kind} --input=FILE "
      "--output=DIR` and pass --config.init_from=DIR (or the .pth file), or "
      f"pass --config.init_from={INIT_FROM_NONE} to train from random "
      "weights on purpose.")


def random_variables(model, seed: int,
                     image_size: tuple[int, int]) -> dict[str, Any]:
  """`model.init`'s variables, as host numpy arrays."""
  dummy = jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
  # Eagerly, not jitted: XLA:CPU compiles one program holding every
  # initialiser's RNG very slowly, while op-by-op init reuses small cached
  # kernels. `lazy_init` runs only the initialisers, not the forward pass
  # on the dummy batch: the same values, fewer programs to compile.
  variables = model.lazy_init(jax.random.key(seed), dummy, train=False)
  return jax.tree.map(np.asarray, dict(variables))


def load_init_weights(path: str, backbone: str = "hrnet") -> dict[str, Any]:
  """ImageNet classifier variables from a folder written by
  `python -m pshrnet_jax.convert`, or from the .pth of `backbone`."""
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


def initial_variables(config: ml_collections.ConfigDict, phase: Phase, model,
                      abstract_variables: Mapping[str, Any], workdir: str,
                      teacher_variables: Mapping[str, Any] | None = None
                      ) -> dict[str, Any]:
  """Random init, then the configured initial weights on top.

  Args:
    config: the run config.
    phase: the phase.
    model: the phase's Flax module.
    abstract_variables: its variables' shapes (`factory.abstract_variables`).
    workdir: the run's workdir (for the phase-1 teacher).
    teacher_variables: the phase-1 teacher, if the caller has read it
      already (else it is read from the workdir when needed).

  Returns:
    {'params', 'batch_stats'} as host arrays.
  """
  from_teacher = phase.from_teacher(config)
  imagenet = None
  if config.init_from not in ("", INIT_FROM_NONE) and not from_teacher:
    # Shapes first: a checkpoint of another width fails before the (slow)
    # random initialisation.
    imagenet = load_init_weights(config.init_from, config.model.backbone)
    _transplant_imagenet(imagenet, abstract_variables, phase.extractor_path)
  image_size = tuple(config.data.image_size)
  variables = random_variables(model, config.seed, image_size)
  if from_teacher:
    teacher_vars = (restore_teacher(config, workdir)
                    if teacher_variables is None else teacher_variables)
    logging.info("%s: the %s's extractor starts from the phase-1 teacher.",
                 phase.name, phase.role)
    return convert.student_from_teacher(teacher_vars, variables)
  if imagenet is None:
    logging.info("%s: random initialisation (--config.init_from=%s).",
                 phase.name, config.init_from or "''")
    return variables
  logging.info("%s: the %s's extractor starts from ImageNet %s %s.",
               phase.name, phase.role,
               factory.imagenet_weights(config.model)[0], config.init_from)
  return _transplant_imagenet(imagenet, variables, phase.extractor_path)


def _transplant_imagenet(imagenet: Mapping[str, Any],
                         variables: Mapping[str, Any],
                         path: tuple[str, ...]) -> dict[str, Any]:
  """`variables` with the extractor at `path` copied from ImageNet weights."""
  if not path:
    return convert.reid_from_imagenet(imagenet, dict(variables))
  head, rest = path[0], path[1:]
  inner = {k: v[head] for k, v in variables.items() if head in v}
  inner = _transplant_imagenet(imagenet, inner, rest)
  return {k: dict(v, **{head: inner[k]}) if k in inner else v
          for k, v in variables.items()}
