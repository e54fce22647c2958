"""`check_config(config)`: one ConfigError naming the flag, the value and
what it may be, before the workdir, the data or a compiler is touched.
Checks that need the data happen where it is read."""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

import ml_collections

from pshrnet_jax.errors import ConfigError
from pshrnet_jax.evaluation import metrics
from pshrnet_jax.models import factory
from pshrnet_jax.models import hrnet
from pshrnet_jax.models import reid_head
from pshrnet_jax.training import initialization
from pshrnet_jax.training import losses
from pshrnet_jax.training import phases

MODES = tuple(p.name for p in phases.PHASES) + ("eval", "all")
DATA_SOURCES = ("tfds", "files")
LR_INTERPOLATIONS = ("bilinear", "bicubic")
STUDENT_INITS = ("imagenet", "teacher")
# An SGD learning rate above this sends these networks to inf at once.
MAX_LR = 10.0


def _fail(flag: str, value: Any, wanted: str) -> None:
  raise ConfigError(f"--config.{flag}={value!r}: {wanted}.")


def _one_of(config, flag: str, allowed: Iterable[Any]) -> None:
  value = _get(config, flag)
  allowed = tuple(allowed)
  if value not in allowed:
    _fail(flag, value, f"expected one of {allowed}")


def _get(config, flag: str) -> Any:
  node = config
  for name in flag.split("."):
    node = node[name]
  return node


def _int(config, flag: str, low: int, high: int | None = None) -> None:
  value = _get(config, flag)
  if isinstance(value, bool) or not isinstance(value, int) or value < low or (
      high is not None and value > high):
    _fail(flag, value, f"expected an integer >= {low}"
          + (f" and <= {high}" if high is not None else ""))


def _number(config, flag: str, low: float, high: float | None = None,
            high_open: bool = False) -> None:
  value = _get(config, flag)
  ok = (not isinstance(value, bool) and isinstance(value, (int, float))
        and math.isfinite(value) and value >= low
        and (high is None or value < high
             or (not high_open and value == high)))
  if not ok:
    _fail(flag, value, f"expected a finite number >= {low}" + (
        "" if high is None else f" and {'<' if high_open else '<='} {high}"))


def _ints(config, flag: str, length: int, low: int) -> None:
  value = _get(config, flag)
  if (not isinstance(value, (tuple, list)) or len(value) != length
      or any(isinstance(v, bool) or not isinstance(v, int) or v < low
             for v in value)):
    _fail(flag, value, f"expected {length} integers >= {low}")


def _check_phase2_loss(config) -> None:
  """Phase 2 needs one term to train: L_ID, L_PS, or L_SR of an SR network
  ('bicubic' and 'none' have none)."""
  loss = config.loss
  sr_network = factory.SR_MODULES[config.model.sr_module].build is not None
  if (phases.STUDENT in phases.to_train(config) and loss.id_weight == 0
      and loss.ps_weight == 0 and (loss.sr_weight == 0 or not sr_network)):
    _fail("loss.id_weight", loss.id_weight,
          "with loss.ps_weight=0 and no L_SR (loss.sr_weight="
          f"{loss.sr_weight}, model.sr_module={config.model.sr_module!r}) "
          "phase 2 has no loss term left to train")


def _check_learning_rates(config) -> None:
  """Every group's lr finite, in [0, MAX_LR] (0: frozen); make_optimizer
  checks the rest of the groups (patterns, keys)."""
  groups = config.optim.groups
  if not hasattr(groups, "items"):
    return  # make_optimizer names the problem.
  for name, group in groups.items():
    if hasattr(group, "items") and "lr" in group:
      _number(config, f"optim.groups.{name}.lr", 0.0, MAX_LR)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first value a run cannot use."""
  _one_of(config, "mode", MODES)
  _int(config, "seed", 0)
  _int(config, "num_devices", 0)
  _one_of(config, "student_init", STUDENT_INITS)
  for flag in ("init_from", "teacher_dir"):
    path = _get(config, flag)
    if flag == "init_from" and path == initialization.INIT_FROM_NONE:
      continue
    if path and not os.path.exists(os.path.expanduser(path)):
      _fail(flag, path, "that path does not exist")

  # Model.
  _int(config, "model.width", 1)
  _ints(config, "model.head_planes", 4, 1)
  _ints(config, "model.hrnet_modules", 3, 1)
  _int(config, "model.hrnet_blocks", 1)
  _one_of(config, "model.pooling", reid_head.POOLING_MODES)
  factory.check_model_config(config.model)
  _int(config, "model.resnet_width", 1)
  _ints(config, "model.resnet_blocks", 4, 1)
  _ints(config, "model.srcnn_features", 2, 1)
  for flag in ("rcan_groups", "rcan_blocks", "rcan_reduction"):
    _int(config, f"model.{flag}", 1)
  _int(config, "model.sr_features", 1)
  _int(config, "model.sr_blocks", 0)
  _number(config, "model.dropout_rate", 0.0, 1.0, high_open=True)

  # Data.
  if not config.data.name:
    _fail("data.name", config.data.name, "a benchmark name is required")
  size = config.data.image_size
  multiple = hrnet.INPUT_MULTIPLE
  if (not isinstance(size, (tuple, list)) or len(size) != 2
      or any(isinstance(v, bool) or not isinstance(v, int) or v < multiple
             or v % multiple for v in size)):
    _fail("data.image_size", size,
          f"expected (height, width), each a multiple of {multiple} (HRNet "
          "halves the image 5 times and its fusions upsample by 2, 4, 8)")
  _int(config, "data.p", 2)  # The triplet loss needs two identities.
  _int(config, "data.k", 1)
  if config.data.k < 2 and config.loss.triplet_weight != 0:
    # Batch-hard mining needs a positive other than the anchor: with K=1
    # every triplet term is 0 and the loss trains nothing.
    _fail("data.k", config.data.k, "expected an integer >= 2 while the "
          "triplet loss is on (each identity needs a second image as the "
          "positive; --config.loss.triplet_weight=0 turns it off)")
  _int(config, "data.pad", 0)
  _int(config, "data.worker_count", 0)
  _int(config, "data.split_index", 0)
  _int(config, "data.seed", 0)
  _one_of(config, "data.lr_interpolation", LR_INTERPOLATIONS)
  _one_of(config, "data.source", DATA_SOURCES)
  build_dir = config.data.build_dir
  if build_dir and os.path.exists(os.path.expanduser(build_dir)) and (
      not os.path.isdir(os.path.expanduser(build_dir))):
    _fail("data.build_dir", build_dir, "expected a folder, not a file")

  # Loss.
  for flag in ("ce_weight", "triplet_weight", "id_weight", "sr_weight",
               "ps_weight", "triplet_margin"):
    _number(config, f"loss.{flag}", 0.0)
  _check_phase2_loss(config)
  _number(config, "loss.label_smoothing", 0.0, 1.0, high_open=True)
  features = config.loss.ps_features
  if (not isinstance(features, (tuple, list)) or not features
      or any(f not in losses.PS_KEYS for f in features)):
    _fail("loss.ps_features", features,
          f"expected a non-empty tuple of {losses.PS_KEYS}")
  repeated = sorted({f for f in features if list(features).count(f) > 1})
  if repeated:
    _fail("loss.ps_features", features,
          f"{repeated} named more than once (each term would count twice)")

  # Optimiser (make_optimizer checks the groups themselves).
  _int(config, "optim.epochs", 1)
  _int(config, "optim.decay_epochs", 1)
  _int(config, "optim.warmup_epochs", 0)
  _number(config, "optim.momentum", 0.0, 1.0, high_open=True)
  _number(config, "optim.weight_decay", 0.0)
  _number(config, "optim.decay_factor", 0.0)
  _number(config, "optim.warmup_lr", 0.0)
  _check_learning_rates(config)
  for phase in phases.PHASES:
    if config.train[f"{phase.name}_epochs"] is not None:
      _int(config, f"train.{phase.name}_epochs", 1)

  # Training and evaluation.
  _int(config, "train.log_every_steps", 1)
  _int(config, "train.checkpoint_every_steps", 1)
  _int(config, "train.max_checkpoints_to_keep", 1)
  _int(config, "eval.batch_size", 1)
  _int(config, "eval.max_rank", 1)
  _int(config, "eval.trials", 1)
  _int(config, "eval.ranked_list_queries", 0)
  _one_of(config, "eval.ap_convention", metrics.AP_CONVENTIONS)
  for flag in ("rerank", "baselines", "sr_quality"):
    if not isinstance(config.eval[flag], bool):
      _fail(f"eval.{flag}", config.eval[flag], "expected True or False")
  _int(config, "eval.rerank_k1", 1)
  _int(config, "eval.rerank_k2", 1)
  _number(config, "eval.rerank_lambda", 0.0, 1.0)

  # Across fields: a head the backbone has, and no accidental training from
  # random weights on a benchmark config.
  initialization.check_init_from(config)
