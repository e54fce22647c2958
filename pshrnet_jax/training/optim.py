"""SGD with PyTorch semantics, step-decay LR, parameter groups from patterns.

The optimiser equals torch.optim.SGD(momentum, nesterov, weight_decay) (SPEC
3): weight decay joins the gradient before the momentum buffer, and the LR
multiplies the Nesterov direction at update time, so an LR change mid-run
behaves as in PyTorch. Groups are regular expressions re.search-ed in each
parameter's '/'-joined path, e.g. {'sr': {'pattern': r'^sr/', 'lr': 8.5e-4}};
every parameter matches exactly one; `frozen: True` (or lr 0) means no update.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from pshrnet_jax.errors import OptimConfigError, ParamGroupError

PyTree = Any

OPTIM_FIELDS = ("momentum", "nesterov", "weight_decay", "epochs",
                "decay_epochs", "decay_factor", "warmup_epochs", "warmup_lr",
                "groups")
_GROUP_FIELDS = ("pattern", "lr", "frozen")
_EXAMPLES_PER_GROUP = 3
_PROBLEMS_SHOWN = 5


class Optimizer(NamedTuple):
  """The optax transformation, the group name of each parameter (a pytree
  like params), step -> {group: learning rate} (0 for frozen groups; Python
  or traced steps), and the start-up log's table of the groups."""
  tx: optax.GradientTransformation
  labels: PyTree
  learning_rates: Callable[[Any], dict[str, Any]]
  summary: str


def step_decay_schedule(base_lr: float, steps_per_epoch: int,
                        decay_epochs: int, decay_factor: float,
                        warmup_epochs: int = 0,
                        warmup_lr: float = 0.0) -> optax.Schedule:
  """lr(step): warmup_lr while epoch < warmup_epochs, else
  base_lr * decay_factor ** (epoch // decay_epochs), epoch = step //
  steps_per_epoch (step: updates already applied). Decays count from epoch
  0, warm-up included, as torch's StepLR."""
  def schedule(step):
    epoch = jnp.asarray(step) // steps_per_epoch
    decayed = base_lr * jnp.power(jnp.float32(decay_factor),
                                  epoch // decay_epochs)
    if warmup_epochs <= 0:
      return decayed
    return jnp.where(epoch < warmup_epochs, jnp.float32(warmup_lr), decayed)
  return schedule


def param_paths(params: PyTree) -> PyTree:
  """A pytree like params whose leaves are '/'-joined paths ('sr/input/kernel')."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: jax.tree_util.keystr(path, simple=True, separator="/"),
      params)


def assign_groups(params: PyTree, patterns: Mapping[str, str]) -> PyTree:
  """A pytree like params of group names: the one of `patterns` ({group:
  regex}) each parameter's path matches.

  Raises:
    ParamGroupError: a parameter matches no group or several (named).
    OptimConfigError: a pattern is not a valid regular expression.
  """
  compiled = {}
  for name, pattern in patterns.items():
    try:
      compiled[name] = re.compile(pattern)
    except re.error as e:
      raise OptimConfigError(
          f"optim.groups.{name}.pattern {pattern!r} is not a valid regular "
          f"expression: {e}") from e

  problems = []

  def label(path: str) -> str:
    matches = [name for name, regex in compiled.items() if regex.search(path)]
    if len(matches) != 1:
      problems.append(f"'{path}' " + ("matches no group" if not matches else
                                      f"matches several groups {matches}"))
      return ""
    return matches[0]

  labels = jax.tree_util.tree_map(label, param_paths(params))
  if problems:
    shown = "; ".join(problems[:_PROBLEMS_SHOWN])
    more = (f" (and {len(problems) - _PROBLEMS_SHOWN} more)"
            if len(problems) > _PROBLEMS_SHOWN else "")
    raise ParamGroupError(
        "every parameter must match exactly one of optim.groups ("
        + ", ".join(f"{n}: {p!r}" for n, p in patterns.items())
        + f"), but {len(problems)} do not: {shown}{more}")
  return labels


def describe_groups(labels: PyTree, params: Optional[PyTree] = None,
                    group_info: Optional[Mapping[str, str]] = None) -> str:
  """The group assignment as a table, for the start-up log.

  Args:
    labels: the group-name pytree (Optimizer.labels).
    params: the matching params or their shapes; None: counts read '?'.
    group_info: {group: settings text}; its groups that no parameter matched
      are listed with '(no parameters)'.
  """
  paths = jax.tree_util.tree_leaves(param_paths(labels))
  names = jax.tree_util.tree_leaves(labels)
  sizes = ([math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)]
           if params is not None else [None] * len(names))
  if len(sizes) != len(names):
    raise ValueError(f"describe_groups: params has {len(sizes)} tensors but "
                     f"labels has {len(names)}")
  group_info = dict(group_info or {})
  order = list(group_info) + sorted(set(names) - set(group_info))
  rows = [("group", "settings", "tensors", "parameters", "examples")]
  for group in order:
    members = [i for i, n in enumerate(names) if n == group]
    count = "?" if params is None else f"{sum(sizes[i] for i in members):,}"
    examples = ", ".join(paths[i] for i in members[:_EXAMPLES_PER_GROUP])
    if len(members) > _EXAMPLES_PER_GROUP:
      examples += ", ..."
    rows.append((group, group_info.get(group, ""), f"{len(members):,}", count,
                 examples or "(no parameters)"))
  widths = [max(len(row[c]) for row in rows) for c in range(4)]
  return "\n".join(
      "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  "
      + row[4] for row in rows)


def _field(config, name: str):
  if name not in config:
    raise OptimConfigError(
        f"optim config has no '{name}'; it needs {', '.join(OPTIM_FIELDS)}")
  return config[name]


def _read_groups(groups) -> dict[str, dict[str, Any]]:
  """Validates optim.groups into {name: {'pattern', 'lr', 'frozen'}}."""
  if not hasattr(groups, "items") or not len(groups):
    raise OptimConfigError(
        "optim.groups must map group names to {'pattern': ..., 'lr': ...}; "
        f"got {groups!r}")
  result = {}
  for name, group in groups.items():
    if not hasattr(group, "items"):
      raise OptimConfigError(f"optim.groups.{name} must be a dict with "
                             f"'pattern' and 'lr'; got {group!r}")
    unknown = sorted(set(dict(group.items())) - set(_GROUP_FIELDS))
    if unknown:
      raise OptimConfigError(f"optim.groups.{name} has unknown keys {unknown};"
                             f" allowed: {list(_GROUP_FIELDS)}")
    frozen = bool(group.get("frozen", False))
    if "pattern" not in group or ("lr" not in group and not frozen):
      raise OptimConfigError(f"optim.groups.{name} needs 'pattern' and 'lr'")
    lr = float(group.get("lr", 0.0))
    if lr < 0:
      raise OptimConfigError(f"optim.groups.{name}.lr is negative: {lr}")
    result[name] = {"pattern": group["pattern"], "lr": lr,
                    "frozen": frozen or lr == 0.0}
  return result


def make_optimizer(optim_config, params: PyTree,
                   steps_per_epoch: int) -> Optimizer:
  """The grouped SGD optimiser of `optim_config` (the fields OPTIM_FIELDS)
  for `params` (or their shapes).

  Raises:
    OptimConfigError: a missing field or unusable value, named.
    ParamGroupError: a parameter in no group or in several.
  """
  momentum = float(_field(optim_config, "momentum"))
  nesterov = bool(_field(optim_config, "nesterov"))
  weight_decay = float(_field(optim_config, "weight_decay"))
  epochs = int(_field(optim_config, "epochs"))
  decay_epochs = int(_field(optim_config, "decay_epochs"))
  decay_factor = float(_field(optim_config, "decay_factor"))
  warmup_epochs = int(_field(optim_config, "warmup_epochs"))
  warmup_lr = float(_field(optim_config, "warmup_lr"))
  groups = _read_groups(_field(optim_config, "groups"))
  if nesterov and momentum <= 0:
    raise OptimConfigError(
        f"optim.nesterov needs momentum > 0 (as in torch); got {momentum}")
  if not 0 <= momentum < 1:
    raise OptimConfigError(f"optim.momentum must be in [0, 1): {momentum}")
  if decay_epochs <= 0 or warmup_epochs < 0 or epochs <= 0:
    raise OptimConfigError(
        f"optim needs epochs > 0, decay_epochs > 0, warmup_epochs >= 0; got "
        f"{epochs}, {decay_epochs}, {warmup_epochs}")
  if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
    raise OptimConfigError(
        f"steps_per_epoch must be a positive int; got {steps_per_epoch!r}")

  labels = assign_groups(params, {n: g["pattern"] for n, g in groups.items()})
  used = set(jax.tree_util.tree_leaves(labels))
  transforms, schedules = {}, {}
  for name, group in groups.items():
    if name not in used:
      continue  # e.g. 'sr' in phase 1; listed in the summary.
    if group["frozen"]:
      transforms[name] = optax.set_to_zero()
      continue
    schedules[name] = step_decay_schedule(
        group["lr"], steps_per_epoch, decay_epochs, decay_factor,
        warmup_epochs, warmup_lr)
    transforms[name] = optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=nesterov),
        optax.scale_by_learning_rate(schedules[name]))

  def learning_rates(step) -> dict[str, Any]:
    return {name: (schedules[name](step) if name in schedules else 0.0)
            for name in transforms}

  decays = ", ".join(str(e) for e in range(decay_epochs, epochs,
                                           decay_epochs)) or "none"
  warmup = (f"{warmup_lr:g} for epochs 0-{warmup_epochs - 1}"
            if warmup_epochs > 0 else "none")
  header = (f"SGD momentum {momentum:g}{' nesterov' if nesterov else ''}, "
            f"weight decay {weight_decay:g}, {epochs} epochs x "
            f"{steps_per_epoch} steps, lr x{decay_factor:g} at epochs "
            f"{decays}, warm-up {warmup}")
  info = {name: ("frozen" if g["frozen"] else f"lr {g['lr']:g}")
          + f" {g['pattern']!r}" for name, g in groups.items()}
  summary = header + "\n" + describe_groups(labels, params, info)
  return Optimizer(optax.multi_transform(transforms, labels), labels,
                   learning_rates, summary)
