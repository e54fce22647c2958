"""One real phase-1 and phase-2 training step, checked against references.

Each step is the one the training loop runs (`loop.build_step`: jit over a
1-device mesh, state donated) on a tiny model, compared with an independent
recomputation:
- the loss, from the model's outputs and the pshrnet_jax.losses functions
  with SPEC 2's weights written here, on the same batch and dropout key;
- the parameter update, from the reference gradients and the first step of
  PyTorch's SGD(momentum 0.9, nesterov, weight decay 5e-4):
  p' = p - lr * (1 + momentum) * (g + wd * p), with each group's LR;
- the BatchNorm running statistics, also by hand for the stem's first BN;
- the frozen teacher: bit-identical after the step, and no gradient reaches
  it.
The data-parallel test runs the phase-2 step on a mesh of the 8 CPU devices
conftest.py forces, against the same step on one device.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_setup as tiny
from pshrnet_jax.training import losses
from pshrnet_jax.training import phases
from pshrnet_jax.training import sharding
from pshrnet_jax.training import steps

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # SPEC 3
CE_WEIGHT, SMOOTHING, TRIPLET_WEIGHT, MARGIN = 1.15, 0.1, 0.2, 0.1  # SPEC 2
SR_WEIGHT, PS_WEIGHT = 0.5, 0.5
PAPER_PS_SET = ("seq1", "seq4", "seq5", "logits")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
STEP_RNG_SEED = 1


def _normalise(images):
  """uint8 -> ImageNet-normalised float32 (SPEC 1.1), inside the jit."""
  return (images.astype(jnp.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _id_loss(aux, labels):
  ce = losses.cross_entropy_label_smoothing(aux["logits"], labels, SMOOTHING)
  triplet = sum(losses.batch_hard_triplet(aux[k], labels, MARGIN)
                for k in ("seq1", "seq2", "seq3", "seq4", "seq5"))
  return CE_WEIGHT * ce + TRIPLET_WEIGHT * triplet, {"ce": ce,
                                                      "triplet": triplet}


def _dropout_key(step: int = 0):
  # The step folds its step counter into the key it is given.
  return jax.random.fold_in(jax.random.key(STEP_RNG_SEED), step)


def _group_lr(name: str) -> float:
  return tiny.SR_LR if name.startswith("sr/") else tiny.HRNET_LR


def _derived_grads(start_params, new_params):
  """The gradient g a first SGD step must have used, per the update rule.

  The first step of PyTorch's SGD(momentum m, nesterov, weight decay wd)
  (its buffer starts at the first gradient) is
  p' = p - lr * (1 + m) * (g + wd * p), so g = (p - p') / (lr (1 + m)) - wd p
  with the LR of the parameter's group.
  """
  def derive(path, p, new):
    lr = _group_lr(jax.tree_util.keystr(path, simple=True, separator="/"))
    p = np.asarray(p, np.float64)
    return (p - np.asarray(new, np.float64)) / (lr * (1 + MOMENTUM)) - (
        WEIGHT_DECAY * p)
  return jax.tree_util.tree_map_with_path(derive, start_params, new_params)


def _norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                           for x in jax.tree.leaves(tree))))


def _relative_error(actual, expected) -> float:
  diff = jax.tree.map(lambda a, e: np.asarray(a, np.float64) - e, actual,
                      expected)
  return _norm(diff) / _norm(expected)


# The gradient of a width-4 HRNet at random init on 8 images is badly
# conditioned (BatchNorm over as few as 16 values in stage 4, grad norm in
# the thousands): inputs normalised in numpy instead of in XLA (ulp-level
# differences) changed it by 1.2% (measured). The references therefore
# normalise inside their jitted program, as the step does, and then agree
# with the step to about 1e-7.
GRAD_RTOL = 1e-3


def _assert_tree_close(actual, expected, what, rtol=2e-4):
  """Leaf-wise closeness relative to each leaf's largest expected value."""
  flat_a = jax.tree_util.tree_leaves_with_path(actual)
  flat_e = jax.tree.leaves(expected)
  assert len(flat_a) == len(flat_e), what
  for (path, a), e in zip(flat_a, flat_e):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    scale = max(float(np.max(np.abs(e))), 1e-12)
    err = float(np.max(np.abs(a - e)))
    assert err <= rtol * scale, (
        f"{what} {jax.tree_util.keystr(path)}: max error {err:.3g} vs "
        f"scale {scale:.3g}")


def _with_decay_probe(variables, path):
  """Sets fc1's bias to DECAY_PROBE: BatchNorm1d follows fc1, so the bias
  gets an exactly zero gradient and its first update is weight decay alone.
  """
  node = variables["params"]
  for name in path[:-1]:
    node = node[name]
  node[path[-1]] = np.full_like(node[path[-1]], DECAY_PROBE)
  return variables


DECAY_PROBE = 0.5


@pytest.fixture(scope="module")
def config():
  return tiny.tiny_config()


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_data_mesh(1)


@pytest.fixture(scope="module")
def batch():
  return tiny.tiny_batch()


@pytest.fixture(scope="module")
def phase1(config, mesh, batch):
  """The teacher's variables, one phase-1 step, and the reference."""
  built = tiny.build_step(config, phases.TEACHER, mesh)
  model, optimizer, step_fn = built.model, built.optimizer, built.step
  variables = _with_decay_probe(tiny.init_variables(model, config.seed),
                                ("head", "fc1", "bias"))
  state = sharding.put_replicated(
      steps.create_state(variables, optimizer.tx), mesh)
  new_state, metrics = step_fn(
      state, sharding.put_batch(batch, mesh),
      sharding.put_replicated(jax.random.key(STEP_RNG_SEED), mesh))

  @jax.jit
  def reference(params, batch_stats, hr, labels, key):
    images = _normalise(hr)

    def loss_fn(p):
      (_, aux), updated = model.apply(
          {"params": p, "batch_stats": batch_stats}, images, train=True,
          rngs={"dropout": key}, mutable=["batch_stats"])
      loss, terms = _id_loss(aux, labels)
      return loss, (terms, updated["batch_stats"])
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, (terms, batch_stats)), grads = reference(
      variables["params"], variables["batch_stats"], batch["hr"],
      batch["label"], _dropout_key())
  return dict(start=variables, state=jax.device_get(new_state),
              metrics=jax.device_get(metrics), ref_loss=float(loss),
              ref_terms=jax.device_get(terms),
              ref_batch_stats=jax.device_get(batch_stats),
              ref_grads=jax.device_get(grads))


@pytest.fixture(scope="module")
def phase2(config, mesh, batch, phase1):
  """One phase-2 step against the phase-1 teacher, and the reference."""
  built = tiny.build_step(config, phases.STUDENT, mesh)
  student, teacher = built.model, built.teacher
  optimizer, step_fn = built.optimizer, built.step
  variables = _with_decay_probe(tiny.init_variables(student, config.seed),
                                ("reid", "head", "fc1", "bias"))
  # The phase-1 teacher with running statistics that keep its eval-mode
  # activations sane (one step leaves them near their init values).
  teacher_vars = tiny.calibrate_batch_stats(
      teacher, {"params": phase1["state"].params,
                "batch_stats": phase1["state"].batch_stats}, batch["hr"])
  teacher_before = jax.tree.map(np.array, teacher_vars)
  bound = dict(model=student, teacher=teacher, tx=optimizer.tx,
               loss_config=config.loss.to_dict())
  teacher_on_device = sharding.put_replicated(teacher_vars, mesh)
  state = sharding.put_replicated(
      steps.create_state(variables, optimizer.tx), mesh)
  new_state, metrics = step_fn(
      state, sharding.put_batch(batch, mesh),
      sharding.put_replicated(jax.random.key(STEP_RNG_SEED), mesh),
      teacher_on_device)

  @jax.jit
  def reference(params, batch_stats, hr, lr, labels, key):
    hr, lr = _normalise(hr), _normalise(lr)
    _, teacher_aux = teacher.apply(teacher_vars, hr, train=False)

    def loss_fn(p):
      (_, aux), updated = student.apply(
          {"params": p, "batch_stats": batch_stats}, lr, train=True,
          rngs={"dropout": key}, mutable=["batch_stats"])
      id_loss, terms = _id_loss(aux, labels)
      terms["sr"] = jnp.mean(jnp.abs(aux["sr"] - hr))
      terms["ps"] = sum(jnp.mean(jnp.abs(teacher_aux[k] - aux[k]))
                        for k in PAPER_PS_SET)
      loss = id_loss + SR_WEIGHT * terms["sr"] + PS_WEIGHT * terms["ps"]
      return loss, (terms, updated["batch_stats"])
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, (terms, batch_stats)), grads = reference(
      variables["params"], variables["batch_stats"], batch["hr"],
      batch["lr"], batch["label"], _dropout_key())

  # Gradient of the step's loss with respect to the teacher's variables.
  start_state = steps.create_state(variables, optimizer.tx)
  global_batch = sharding.put_batch(batch, mesh)

  def loss_wrt_teacher(tv):
    _, m = steps.phase2_step(start_state, global_batch,
                             jax.random.key(STEP_RNG_SEED), tv, **bound)
    return m["loss"]
  teacher_grads = jax.jit(jax.grad(loss_wrt_teacher))(teacher_vars)

  return dict(start=variables, state=jax.device_get(new_state),
              metrics=jax.device_get(metrics), ref_loss=float(loss),
              ref_terms=jax.device_get(terms),
              ref_batch_stats=jax.device_get(batch_stats),
              ref_grads=jax.device_get(grads),
              teacher_before=teacher_before,
              teacher_after=jax.device_get(teacher_on_device),
              teacher_grads=jax.device_get(teacher_grads))


def test_phase1_loss_equals_reference(phase1):
  metrics = phase1["metrics"]
  assert np.isfinite(metrics["loss"])
  np.testing.assert_allclose(metrics["loss"], phase1["ref_loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics["ce"], phase1["ref_terms"]["ce"],
                             rtol=1e-5)
  np.testing.assert_allclose(metrics["triplet"],
                             phase1["ref_terms"]["triplet"], rtol=1e-5)
  # Random init on 6 classes: CE close to log(6), far from 0.
  assert 0.5 * np.log(6) < metrics["ce"] < 3 * np.log(6)


def _check_sgd_update(result, decay_probe_path):
  state, start = result["state"], result["start"]
  derived = _derived_grads(start["params"], state.params)
  # The step's own gradient norm (a metric) equals that of the gradient the
  # update implies: learning rates, (1 + momentum), decay are all right.
  np.testing.assert_allclose(_norm(derived), result["metrics"]["grad_norm"],
                             rtol=1e-4)
  # Weight decay alone moves a parameter whose gradient is exactly zero:
  # p' = p - lr (1 + m) wd p.
  node_new, node_old = state.params, start["params"]
  for name in decay_probe_path:
    node_new, node_old = node_new[name], node_old[name]
  np.testing.assert_allclose(
      np.asarray(node_new, np.float64) - node_old,
      -tiny.HRNET_LR * 1.9 * 5e-4 * DECAY_PROBE, rtol=1e-2)
  return derived


def test_phase1_update_is_first_nesterov_sgd_step(phase1):
  derived = _check_sgd_update(phase1, ("head", "fc1", "bias"))
  error = _relative_error(derived, phase1["ref_grads"])
  print(f"phase 1: step vs reference gradient, relative L2 error {error:.2e}")
  assert error < GRAD_RTOL
  assert int(phase1["state"].step) == 1


def test_phase1_batch_norm_statistics_updated_in_train_mode(phase1, batch):
  state, start = phase1["state"], phase1["start"]
  _assert_tree_close(state.batch_stats, phase1["ref_batch_stats"],
                     "phase-1 batch_stats", rtol=1e-5)
  # By hand for the stem: conv1 (3x3, stride 2, pad 1, no bias), then
  # running = 0.9 * running + 0.1 * batch statistic (unbiased variance).
  x = np.pad((batch["hr"] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD,
             ((0, 0), (1, 1), (1, 1), (0, 0)))
  kernel = np.asarray(start["params"]["backbone"]["conv1"]["kernel"],
                      np.float64)
  h, w = tiny.IMAGE_SIZE[0] // 2, tiny.IMAGE_SIZE[1] // 2
  patches = np.stack([np.stack([x[:, i:i + 2 * h:2, j:j + 2 * w:2]
                                for j in range(3)], axis=3)
                      for i in range(3)], axis=3)  # (B, h, w, 3, 3, C)
  out = np.einsum("bhwijc,ijco->bhwo", patches, kernel).reshape(
      -1, kernel.shape[-1])
  stats = state.batch_stats["backbone"]["bn1"]
  np.testing.assert_allclose(stats["mean"], 0.1 * out.mean(0), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * out.var(0, ddof=1),
                             rtol=1e-4)


def test_phase2_loss_equals_reference(phase2):
  metrics, terms = phase2["metrics"], phase2["ref_terms"]
  assert np.isfinite(metrics["loss"]) and np.isfinite(phase2["ref_loss"])
  np.testing.assert_allclose(metrics["loss"], phase2["ref_loss"], rtol=1e-5)
  for key in ("ce", "triplet", "sr", "ps"):
    np.testing.assert_allclose(metrics[key], terms[key], rtol=1e-5,
                               err_msg=key)
  assert terms["sr"] > 0.01 and terms["ps"] > 0.01  # Terms really present.


def test_phase2_update_uses_both_learning_rate_groups(phase2):
  state, start, grads = phase2["state"], phase2["start"], phase2["ref_grads"]
  assert set(state.params) == {"sr", "reid"}  # The teacher is not trained.
  derived = _check_sgd_update(phase2, ("reid", "head", "fc1", "bias"))
  for group in ("sr", "reid"):  # 'reid' is all of the 'hrnet' group.
    error = _relative_error(derived[group], grads[group])
    print(f"phase 2 '{group}': step vs reference gradient, relative L2 "
          f"error {error:.2e}")
    assert error < GRAD_RTOL, group
  _assert_tree_close(state.batch_stats, phase2["ref_batch_stats"],
                     "phase-2 batch_stats", rtol=1e-5)
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: bool(np.any(a != b)), state.batch_stats,
      start["batch_stats"]))
  assert all(changed)  # Every BN of the student saw the batch.


def test_phase2_teacher_frozen(phase2):
  before, after = phase2["teacher_before"], phase2["teacher_after"]
  assert jax.tree.structure(before) == jax.tree.structure(after)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert a.dtype == b.dtype and np.array_equal(a, b)
  norms = [float(np.max(np.abs(g)))
           for g in jax.tree.leaves(phase2["teacher_grads"])]
  assert len(norms) == len(jax.tree.leaves(before))
  assert max(norms) == 0.0


def _max_abs_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_data_parallel_step_matches_single_device(config, batch, phase2):
  """The phase-2 step on 8 devices (batch split over "data") vs 1 device."""
  assert jax.device_count() == 8  # conftest.py forces 8 CPU devices.
  mesh8 = sharding.make_data_mesh(8)
  built = tiny.build_step(config, phases.STUDENT, mesh8)
  optimizer, step8 = built.optimizer, built.step
  start = phase2["start"]
  global_batch = sharding.put_batch(batch, mesh8)
  rows = {s.data.shape[0] for s in global_batch["hr"].addressable_shards}
  state8, metrics8 = step8(
      sharding.put_replicated(steps.create_state(start, optimizer.tx), mesh8),
      global_batch, sharding.put_replicated(jax.random.key(STEP_RNG_SEED),
                                            mesh8),
      sharding.put_replicated(phase2["teacher_before"], mesh8))
  assert len(state8.params["sr"]["input"]["kernel"].devices()) == 8
  assert rows == {1}
  state8, metrics8 = jax.device_get((state8, metrics8))
  state1, metrics1 = phase2["state"], phase2["metrics"]
  result = {
      "loss_8": float(metrics8["loss"]), "loss_1": float(metrics1["loss"]),
      "max_param_diff": _max_abs_diff(state8.params, state1.params),
      "max_param_change": _max_abs_diff(state1.params, start["params"]),
      "relative_update_diff": _relative_error(
          jax.tree.map(np.subtract, state8.params, start["params"]),
          jax.tree.map(np.subtract, state1.params, start["params"])),
      "max_batch_stats_diff": _max_abs_diff(state8.batch_stats,
                                            state1.batch_stats),
      "max_batch_stats_change": _max_abs_diff(state1.batch_stats,
                                              start["batch_stats"]),
  }
  print("8 vs 1 device:", json.dumps(result, indent=1))
  np.testing.assert_allclose(result["loss_8"], result["loss_1"],
                             rtol=tiny.LOSS_RTOL)
  change_rtol = tiny.CHANGE_RTOL
  assert result["max_param_diff"] <= change_rtol * result["max_param_change"]
  assert result["relative_update_diff"] <= change_rtol
  assert result["max_batch_stats_diff"] <= (
      change_rtol * result["max_batch_stats_change"])
  # The step really moved things, so agreement is not vacuous.
  assert result["max_param_change"] > 1e-3
  assert result["max_batch_stats_change"] > 1e-3
