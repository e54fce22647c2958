"""Pure training steps, one per phase (L_ID on HR images; L_TOTAL on LR
images against the frozen teacher), and `jit_step`, which binds and jits
them over the "data" mesh."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from pshrnet_jax.models import layers
from pshrnet_jax.training import losses
from pshrnet_jax.models.inputs import normalize_images

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
  """Everything a phase updates. The teacher is not part of it."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def create_state(variables: Mapping[str, Any],
                 tx: optax.GradientTransformation) -> TrainState:
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params))


def _apply_gradients(state: TrainState, grads: Any, batch_stats: Any,
                     tx: optax.GradientTransformation,
                     metrics: Metrics) -> tuple[TrainState, Metrics]:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # 1.0 while every updated parameter is finite: the loop refuses to save
  # (or to go on from) a state where it is not.
  params_finite = jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
  metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                 params_finite=params_finite.astype(jnp.float32))
  return TrainState(step=state.step + 1, params=params,
                    batch_stats=batch_stats, opt_state=opt_state), metrics


def _id_loss_kwargs(loss_config: Mapping[str, Any],
                    aux: Mapping[str, jax.Array]) -> dict[str, Any]:
  # The triplet loss sums over the representation sequences the model has
  # (HRNet-ReID: seq1..seq5; ResNet-50 and HRNet's ImageNet head: seq5).
  return dict(ce_weight=loss_config["ce_weight"],
              label_smoothing=loss_config["label_smoothing"],
              triplet_weight=loss_config["triplet_weight"],
              margin=loss_config["triplet_margin"],
              triplet_features=losses.sequence_keys(aux))


def phase1_step(state: TrainState, batch: Batch, rng: jax.Array, *,
                model: nn.Module, tx: optax.GradientTransformation,
                loss_config: Mapping[str, Any]) -> tuple[TrainState, Metrics]:
  """One SGD step of the HR teacher on `batch['hr']` with L_ID."""
  images = normalize_images(batch["hr"])
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    (_, aux), updated = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, images,
        train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    loss, metrics = losses.id_loss(aux, batch["label"],
                                   **_id_loss_kwargs(loss_config, aux))
    return loss, (metrics, updated["batch_stats"])

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  return _apply_gradients(state, grads, batch_stats, tx,
                          dict(metrics, loss=loss))


def phase2_step(state: TrainState, batch: Batch, rng: jax.Array,
                teacher_variables: Mapping[str, Any] | None = None, *,
                model: nn.Module, teacher: nn.Module | None,
                tx: optax.GradientTransformation,
                loss_config: Mapping[str, Any]) -> tuple[TrainState, Metrics]:
  """One SGD step of the student `model` on (HR, LR) pairs with L_TOTAL.

  The teacher runs in eval mode on HR images and gets no gradient; its
  variables are an argument so they are not baked into the compiled program.
  Without L_PS (`loss_config['ps_weight']` 0) it may be None: no teacher.
  Pairs where the optional `batch['has_hr']` is False count in L_ID only; a
  student without an SR network has no L_SR.
  """
  hr = normalize_images(batch["hr"])
  lr = normalize_images(batch["lr"])
  dropout_rng = jax.random.fold_in(rng, state.step)
  teacher_aux = None
  if teacher is not None:
    _, teacher_aux = teacher.apply(teacher_variables, hr, train=False)
    teacher_aux = jax.lax.stop_gradient(teacher_aux)

  def loss_fn(params):
    (_, aux), updated = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, lr,
        train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    loss, metrics = losses.total_loss(
        aux, teacher_aux, hr, batch["label"],
        id_weight=loss_config["id_weight"],
        sr_weight=loss_config["sr_weight"] if model.has_sr_network else 0,
        ps_weight=loss_config["ps_weight"],
        ps_features=losses.present_keys(loss_config["ps_features"], aux),
        pair_mask=batch.get("has_hr"), **_id_loss_kwargs(loss_config, aux))
    return loss, (metrics, updated["batch_stats"])

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  return _apply_gradients(state, grads, batch_stats, tx,
                          dict(metrics, loss=loss))


class _Bound:
  """A step's keyword-only arguments as one static argument of jax.jit, equal
  to another when their `key`s are equal (the step function the same)."""

  def __init__(self, step_fn: Callable[..., Any], key: Hashable,
               kwargs: Mapping[str, Any]):
    self.step_fn, self.key, self.kwargs = step_fn, key, dict(kwargs)
    # Once: jax.jit hashes its static argument at every call (every step).
    self._hash = hash((step_fn, key))

  def __eq__(self, other: Any) -> bool:
    return (isinstance(other, _Bound) and self.step_fn is other.step_fn
            and self.key == other.key)

  def __hash__(self) -> int:
    return self._hash


def _train_step(bound: _Bound, *args: Any) -> Any:
  return bound.step_fn(*args, **bound.kwargs)


class JittedStep:
  """`step(state, batch, rng, *extra)`, and `.lower(...)` with the same
  arguments (ahead-of-time compilation, for benchmarks)."""

  def __init__(self, jitted: Any, bound: _Bound):
    self._jitted, self._bound = jitted, bound

  def __call__(self, *args: Any) -> tuple[TrainState, Metrics]:
    return self._jitted(self._bound, *args)

  def lower(self, *args: Any) -> Any:
    return self._jitted.lower(self._bound, *args)


def jit_step(step_fn: Callable[..., tuple[TrainState, Metrics]],
             replicated: Any, batch_sharding: Any, *, key: Hashable,
             num_extra_args: int = 0, **bound: Any) -> JittedStep:
  """`step_fn` with its keyword-only arguments `bound`, jitted with the batch
  sharded, the state, the RNG key and `num_extra_args` further positional
  arguments (phase 2's teacher variables) replicated, the state donated.

  `key` is what `bound` is a pure function of (hashable; e.g. the modules
  and the configs the optimiser and the losses are made from): steps jitted
  again with an equal key and the same `step_fn`, in this process, share
  one trace and compiled program (jax.jit's own cache, which compares
  static arguments by value) -- a phase trained again in a notebook, or by
  another test.
  """
  jitted = jax.jit(
      _train_step, static_argnums=0,
      in_shardings=(replicated, batch_sharding, replicated)
      + (replicated,) * num_extra_args,
      out_shardings=(replicated, replicated),
      donate_argnums=1, compiler_options=layers.compiler_options())
  return JittedStep(jitted, _Bound(step_fn, key, bound))
