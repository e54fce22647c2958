"""The tiny training set-up shared by the training and end-to-end tests.

One config (width 4, 64x32 images, P x K = 4 x 2), one synthetic source and
one random batch, so every test trains the same tiny models with the same
optimiser and loss: their steps are then traced once per process (equal
phases share a trace through `steps.jit_step`'s key) and compiled once per
machine (the persistent compilation cache).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import sys

import jax
import ml_collections
import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from configs import base
from pshrnet_jax import driver
from pshrnet_jax.models.inputs import normalize_images
from pshrnet_jax.training import checkpoint
from pshrnet_jax.training import initialization
from pshrnet_jax.training import loop

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
# input differences moved it by 1.2%. Measured here:
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
  # One module per stage and one block per branch: every stage, branch and
  # fusion of HRNet, a fifth of its operations to compile (the full depth
  # is proven by the parity tests).
  config.model.hrnet_modules = (1, 1, 1)
  config.model.hrnet_blocks = 1
  config.model.sr_features = 8
  config.model.sr_blocks = 2
  config.model.ca_reduction = 2  # Attention 8 -> 4 channels.
  # The ablation extractors and SR networks, as narrow and shallow: every
  # layer kind and skip, a fraction of the operations to compile.
  config.model.resnet_width = 4
  config.model.resnet_blocks = (1, 1, 1, 1)
  config.model.srcnn_features = (8, 4)
  config.model.rcan_groups = 1
  config.model.rcan_blocks = 1
  config.model.rcan_reduction = 4
  # Random weights on purpose: there are no ImageNet weights in the tests.
  config.init_from_required = False
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
  # The suite runs with 8 forced CPU devices (conftest.py); runs use one,
  # and the data-parallel test builds its own 8-device mesh.
  config.num_devices = 1
  config.lock()
  return config


def make_tiny_source(directory: str) -> str:
  """A Market-layout synthetic set: 6 train ids, 6 test ids, 3 cameras."""
  from data_pipelines.builders import synthetic  # pylint: disable=g-import-not-at-top
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
  """Random variables as the training loop makes them."""
  return initialization.random_variables(model, seed, IMAGE_SIZE)


def build_step(config: ml_collections.ConfigDict, phase, mesh):
  """`loop.build_step` for the tiny set: what `driver.run` trains with.
  Built again with equal settings, it reuses the first build's trace."""
  return loop.build_step(config, phase, NUM_TRAIN_IDS, STEPS_PER_EPOCH, mesh)


@functools.lru_cache(maxsize=4)
def _train_mode_batch_stats(model):
  return jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.key(0)}))


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
  _, updated = _train_mode_batch_stats(model)(
      {"params": variables["params"], "batch_stats": initial},
      normalize_images(images))
  stats = jax.tree_util.tree_map_with_path(
      lambda path, x: (np.asarray(x) - (0.9 if path[-1].key == "var" else 0.0))
      / 0.1, jax.device_get(updated["batch_stats"]))
  return {"params": variables["params"], "batch_stats": stats}


# --- End-to-end runs on the tiny set (tests/conftest.py's session fixtures).

TOTAL_STEPS = {"phase1": STEPS_PER_EPOCH * PHASE1_EPOCHS,
               "phase2": STEPS_PER_EPOCH * PHASE2_EPOCHS}
KILL_AFTER_STEP = 4
# The phase-1 runs that are killed and resumed save every 2 steps, so the
# killed workdir holds checkpoints 2 and 4.
PHASE1_ONLY = {"mode": "phase1", "train.checkpoint_every_steps": 2}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Killed(Exception):
  """Stands for the process dying right after a checkpoint was written."""


class LogCapture(logging.Handler):
  """Collects absl log messages (absl logs through the 'absl' logger)."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())

  @property
  def text(self) -> str:
    return "\n".join(self.messages)


@contextlib.contextmanager
def capture_logs():
  handler = LogCapture()
  logger = logging.getLogger("absl")
  old_level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    yield handler
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def tree_hash(path: str) -> str:
  """Hash of every file's relative path and bytes under `path`."""
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(path)):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      digest.update(os.path.relpath(full, path).encode())
      with open(full, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def damaged_copy(variables_dir: str, target: str) -> str:
  """A copy of exported variables with every array file truncated."""
  shutil.copytree(variables_dir, target)
  for root, _, names in os.walk(target):
    for name in names:
      path = os.path.join(root, name)
      if "/d/" in path and os.path.getsize(path) > 16:
        with open(path, "r+b") as f:
          f.truncate(8)
  return target


def set_dotted(config: ml_collections.ConfigDict,
               **overrides) -> ml_collections.ConfigDict:
  """Sets dotted overrides, e.g. {'model.width': 8}, as --config.a.b=v."""
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def config_with(source: str, **overrides) -> ml_collections.ConfigDict:
  """`tiny_config(source)` with dotted overrides, e.g. {'model.width': 8}."""
  return set_dotted(tiny_config(source), **overrides)


def main_args(workdir, *overrides, config_file="configs/mlr_market1501.py"):
  """`python -m pshrnet_jax.main` sharing this process's XLA cache."""
  cache = jax.config.jax_compilation_cache_dir
  return [sys.executable, "-m", "pshrnet_jax.main", f"--config={config_file}",
          f"--workdir={workdir}", f"--config.compilation_cache_dir={cache}",
          *overrides]


def command_argv(command: str) -> list[str]:
  """A README command line as argv, run by this interpreter."""
  argv = command.split()
  return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


def copy_workdir(src: str, tmp_path) -> str:
  dst = str(tmp_path / "workdir")
  shutil.copytree(src, dst)
  return dst


def run_killed(source: str, workdir: str) -> str:
  """Phase 1 stopped right after its checkpoint at step KILL_AFTER_STEP;
  returns `workdir`."""
  original_save = checkpoint.PhaseCheckpointer.save

  def save_then_die(self, step, *args, **kwargs):
    started = original_save(self, step, *args, **kwargs)
    if step == KILL_AFTER_STEP:
      self.wait_until_finished()
      raise Killed(step)
    return started

  checkpoint.PhaseCheckpointer.save = save_then_die
  try:
    driver.run(config_with(source, **PHASE1_ONLY), workdir)
  except Killed:
    return workdir
  finally:
    checkpoint.PhaseCheckpointer.save = original_save
  raise AssertionError("the run was not stopped at its checkpoint")


def main_overrides(source: str, **overrides) -> list[str]:
  """`--config.*` flags that turn configs/mlr_market1501.py into
  `config_with(source, **overrides)`: the same runs, as a command."""
  config = config_with(source, **overrides)
  reference = base.get_base_config("paper")
  reference.data.name = "mlr_market1501"
  flat, ref = _flat(config.to_dict()), _flat(reference.to_dict())
  return [f"--config.{key}={value}" for key, value in sorted(flat.items())
          if ref.get(key) != value]


def _flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def read_scalars(event_dir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar in the TensorBoard event files of `event_dir`, by tag."""
  events = event_accumulator.EventAccumulator(
      event_dir, size_guidance={event_accumulator.SCALARS: 0},
      purge_orphaned_data=False)
  events.Reload()
  tags = events.Tags()[event_accumulator.SCALARS]
  assert tags, f"no scalars in {event_dir}"
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
          for tag in tags}
