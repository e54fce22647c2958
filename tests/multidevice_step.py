"""A tiny phase-2 step on an 8-device mesh against the same step on 1 device.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/multidevice_step.py

runs one jitted phase-2 training step (student + frozen teacher, L_TOTAL,
grouped SGD) from the same initial state and the same global batch on a mesh
of 8 CPU devices (the batch split over "data") and on a mesh of 1 device,
prints one JSON line with the largest differences of the loss, the updated
parameters and the BatchNorm statistics, and exits non-zero if they differ by
more than float32 reduction-order noise. tests/test_train.py runs it in a
subprocess (the device count must be fixed before JAX starts).

The module also holds the tiny training set-up shared by test_train.py and
test_main.py, so the compiled programs of the step tests and of the end-to-
end runs are the same ones (and hit the persistent compilation cache).
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # When run as a script from anywhere.
  sys.path.insert(0, _REPO)

from configs import base  # pylint: disable=g-import-not-at-top
from pshrnet_jax import optim
from pshrnet_jax import sharding
from pshrnet_jax import steps
from pshrnet_jax import train
from pshrnet_jax.features import normalize_images

IMAGE_SIZE = (64, 32)
# The synthetic set of make_tiny_source: 6 training identities with 6 images
# each give 3 groups of K=2 per identity, so 18 // P = 4 steps per epoch.
NUM_TRAIN_IDS = 6
STEPS_PER_EPOCH = 4
P, K = 4, 2  # 8 pairs: divides over the 8 forced devices.
HRNET_LR, SR_LR = 0.05, 0.005  # Distinct, so a swapped group shows.
PHASE1_EPOCHS, PHASE2_EPOCHS = 2, 6
# Tolerances for the 8-device vs 1-device comparison, relative to the loss
# and to the largest change the step made. The 8-device program sums in
# another order (BatchNorm statistics, loss means, gradients), and the
# gradient of this random tiny network is badly conditioned: ulp-level
# input differences moved it by 1.2% (see test_train.py). Measured here:
# loss 2e-6, parameters 1e-4, batch statistics 1e-5 of the largest change.
# A real data-parallel bug (BatchNorm or the triplet mining on one device's
# rows) changes the loss and the update by orders of magnitude more.
LOSS_RTOL = 1e-5
CHANGE_RTOL = 1e-3


def tiny_config(root: str = "") -> ml_collections.ConfigDict:
  """The paper config shrunk to seconds on a CPU (locked, as main makes it)."""
  config = base.get_base_config("paper")
  config.data.name = "mlr_market1501"
  config.data.root = root
  config.data.source = "files"
  config.data.image_size = IMAGE_SIZE
  config.data.p, config.data.k = P, K
  config.model.width = 4
  config.model.head_planes = (4, 8, 16, 32)
  config.model.sr_features = 8
  config.model.sr_blocks = 2
  # Phase 1: 2 epochs. Phase 2: 6, so that the student's BatchNorm running
  # statistics (momentum 0.9) have left their initial values behind; after
  # 8 steps its eval-mode features were all alike (cosine distances ~1e-7),
  # which makes any ranking a matter of float rounding.
  config.optim.epochs = PHASE2_EPOCHS
  config.train.phase1_epochs = PHASE1_EPOCHS
  config.optim.groups.hrnet.lr = HRNET_LR
  config.optim.groups.sr.lr = SR_LR
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 1000  # Only the final step.
  config.train.max_checkpoints_to_keep = 10
  config.eval.batch_size = 24
  config.eval.ranked_list_queries = 2
  config.lock()
  return config


def make_tiny_source(directory: str) -> str:
  """A Market-layout synthetic set: 6 train ids, 6 test ids, 3 cameras."""
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.generate_demo(
      directory, 0, num_train_ids=NUM_TRAIN_IDS, num_test_ids=6,
      num_cameras=3, images_per_camera=2, image_size=IMAGE_SIZE)


def tiny_batch(seed: int = 0) -> dict[str, np.ndarray]:
  """One global P x K batch of random HR/LR uint8 pairs, labels 0..P-1."""
  rng = np.random.default_rng(seed)
  shape = (P * K, *IMAGE_SIZE, 3)
  hr = rng.integers(0, 256, shape, dtype=np.uint8)
  # LR: a blocky version of HR (2x down, nearest up), as a degraded pair.
  lr = np.repeat(np.repeat(hr[:, ::2, ::2], 2, axis=1), 2, axis=2)
  return {"hr": hr, "lr": lr,
          "label": np.repeat(np.arange(P, dtype=np.int32), K)}


def init_variables(model, seed: int) -> dict:
  """Random variables as train.py makes them (eager init: compiling one
  program with every initialiser takes minutes on XLA:CPU)."""
  dummy = jnp.zeros((1, *IMAGE_SIZE, 3), jnp.float32)
  variables = model.init(jax.random.key(seed), dummy, train=False)
  return jax.tree.map(np.asarray, dict(variables))


def calibrate_batch_stats(model, variables: dict,
                          images: np.ndarray) -> dict:
  """Running BatchNorm statistics set to the batch statistics of `images`.

  A barely trained network in eval mode (running mean near 0, variance near
  1) blows activations up to ~1e8 by stage 4, which makes the teacher's
  outputs and L_PS meaningless. From running statistics (0, 1), one
  train-mode pass moves each 10% of the way to the batch statistic; undoing
  that gives the batch statistic itself, so the network in eval mode
  behaves like a trained one on this batch.
  """
  initial = jax.tree_util.tree_map_with_path(
      lambda path, x: np.full_like(x, 1.0 if path[-1].key == "var" else 0.0),
      variables["batch_stats"])
  _, updated = jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.key(0)}))(
                                   {"params": variables["params"],
                                    "batch_stats": initial},
                                   normalize_images(images))
  stats = jax.tree_util.tree_map_with_path(
      lambda path, x: (np.asarray(x) - (0.9 if path[-1].key == "var" else 0.0))
      / 0.1, jax.device_get(updated["batch_stats"]))
  return {"params": variables["params"], "batch_stats": stats}


def make_tx(config: ml_collections.ConfigDict, params) -> optim.Optimizer:
  return optim.make_optimizer(config.optim, params, STEPS_PER_EPOCH)


def phase2_setup(config: ml_collections.ConfigDict):
  """(student, teacher, student variables, teacher variables, optimizer)."""
  student = train.build_student(config, NUM_TRAIN_IDS)
  teacher = train.build_teacher(config, NUM_TRAIN_IDS)
  student_vars = init_variables(student, config.seed)
  teacher_vars = calibrate_batch_stats(
      teacher, init_variables(teacher, config.seed + 7), tiny_batch()["hr"])
  optimizer = make_tx(config, student_vars["params"])
  return student, teacher, student_vars, teacher_vars, optimizer


def run_phase2_step(config, mesh, setup, batch, seed: int = 1):
  """One jitted phase-2 step on `mesh`; returns host (state, metrics)."""
  student, teacher, student_vars, teacher_vars, optimizer = setup
  step_fn = steps.jit_step(
      steps.phase2_step, sharding.replicated(mesh),
      sharding.batch_sharded(mesh), num_extra_args=1, student=student,
      teacher=teacher, tx=optimizer.tx, loss_config=config.loss.to_dict())
  state = sharding.put_replicated(
      steps.create_state(student_vars, optimizer.tx), mesh)
  global_batch = sharding.put_batch(batch, mesh)
  rows_per_device = {s.data.shape[0]
                     for s in global_batch["hr"].addressable_shards}
  new_state, metrics = step_fn(
      state, global_batch,
      sharding.put_replicated(jax.random.key(seed), mesh),
      sharding.put_replicated(teacher_vars, mesh))
  placement = {
      "devices": len(new_state.params["sr"]["input"]["kernel"].devices()),
      "batch_rows_per_device": sorted(rows_per_device)}
  return jax.device_get(new_state), jax.device_get(metrics), placement


def _max_abs_diff(a, b) -> float:
  diffs = jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64)
                                       - np.asarray(y, np.float64)))), a, b)
  return max(jax.tree.leaves(diffs))


def _relative_update_diff(params8, params1, start) -> float:
  """||update_8 - update_1|| / ||update_1|| over all parameters."""
  def sq(tree):
    return sum(float(np.sum(np.square(np.asarray(x, np.float64))))
               for x in jax.tree.leaves(tree))
  diff = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, params8,
                      params1)
  update = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, params1,
                        start)
  return float(np.sqrt(sq(diff) / sq(update)))


def compare_meshes() -> dict:
  """Runs the step on 8 devices and on 1; returns the differences."""
  if jax.device_count() < 8:
    raise SystemExit(
        f"needs 8 devices, JAX sees {jax.device_count()}: run with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=8")
  config = tiny_config()
  setup = phase2_setup(config)
  batch = tiny_batch()
  state8, metrics8, placement8 = run_phase2_step(
      config, sharding.make_data_mesh(8), setup, batch)
  state1, metrics1, placement1 = run_phase2_step(
      config, sharding.make_data_mesh(1), setup, batch)
  start = setup[2]
  return {
      "loss_8": float(metrics8["loss"]), "loss_1": float(metrics1["loss"]),
      "max_metric_diff": _max_abs_diff(metrics8, metrics1),
      "max_param_diff": _max_abs_diff(state8.params, state1.params),
      "max_batch_stats_diff": _max_abs_diff(state8.batch_stats,
                                            state1.batch_stats),
      "max_opt_state_diff": _max_abs_diff(state8.opt_state,
                                          state1.opt_state),
      "max_param_change": _max_abs_diff(state1.params, start["params"]),
      "relative_update_diff": _relative_update_diff(
          state8.params, state1.params, start["params"]),
      "max_batch_stats_change": _max_abs_diff(state1.batch_stats,
                                              start["batch_stats"]),
      "placement_8": placement8, "placement_1": placement1,
  }


def main() -> int:
  result = compare_meshes()
  print(json.dumps(result, sort_keys=True))
  ok = (abs(result["loss_8"] - result["loss_1"])
        <= LOSS_RTOL * abs(result["loss_1"])
        and result["max_param_diff"]
        <= CHANGE_RTOL * result["max_param_change"]
        and result["max_batch_stats_diff"]
        <= CHANGE_RTOL * result["max_batch_stats_change"]
        and result["relative_update_diff"] <= CHANGE_RTOL
        and result["placement_8"]["devices"] == 8)
  return 0 if ok else 1


if __name__ == "__main__":
  cache = os.environ.get("PSHRNET_JAX_TEST_CACHE")
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  sys.exit(main())
