"""The project's training steps at any size, for the benchmark scripts.

`scripts/benchmark_train.py` (JAX beside PyTorch) and
`scripts/profile_step.py` (where a step's time goes) build the same steps
from the same arguments here; nothing here imports PyTorch.

The step is exactly the training loop's (`loop.build_step` on a 1-device
mesh, with the paper's loss config).
"""

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from configs import base
from pshrnet_jax.models import factory
from pshrnet_jax.training import loop
from pshrnet_jax.training import phases
from pshrnet_jax.training import sharding
from pshrnet_jax.training import steps


def add_size_flags(parser, *, width=8, image_size=(128, 64), p=4, k=6,
                   sr_blocks=6, sr_features=16, pairs=True):
  """The model and image sizes the benchmark scripts take (argparse), and
  with `pairs` the training batch's P x K."""
  ints = lambda text: [int(v) for v in text.split(",")]
  sizes = [("width", width), ("sr_blocks", sr_blocks),
           ("sr_features", sr_features), ("num_classes", 751)]
  for name, default in sizes + ([("p", p), ("k", k)] if pairs else []):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--image_size", type=ints, default=list(image_size),
                      help="H,W (multiples of 32)")
  parser.add_argument("--head_planes", type=ints, default=None,
                      help="default: width * (1, 2, 4, 8)")
  parser.add_argument("--hrnet_modules", type=ints, default=[1, 4, 3],
                      help="modules in stages 2-4 (the demo: 1,1,1)")
  parser.add_argument("--hrnet_blocks", type=int, default=4,
                      help="blocks per branch (the demo: 1)")


def check_size_flags(parser, args) -> None:
  if len(args.image_size) != 2 or any(v % 32 for v in args.image_size):
    parser.error(f"--image_size must be H,W with multiples of 32, got "
                 f"{args.image_size}")
  if args.num_classes < getattr(args, "p", 1):
    parser.error("--num_classes must be >= --p")


def make_config(args):
  """The paper's base config with the benchmark's model sizes."""
  config = base.get_base_config("paper")
  config.model.width = args.width
  config.model.head_planes = tuple(args.head_planes or
                                   [args.width * 2**i for i in range(4)])
  config.model.hrnet_modules = tuple(args.hrnet_modules)
  config.model.hrnet_blocks = args.hrnet_blocks
  config.model.sr_blocks = args.sr_blocks
  config.model.sr_features = args.sr_features
  if hasattr(args, "p"):  # add_size_flags(pairs=True)
    config.data.p, config.data.k = args.p, args.k
  config.data.image_size = tuple(args.image_size)
  return config


def make_batch(args, seed=0):
  """Random uint8 HR/LR images and P identities x K pairs of labels."""
  rng = np.random.default_rng(seed)
  b = args.p * args.k
  shape = (b, *args.image_size, 3)
  ids = rng.choice(args.num_classes, args.p, replace=False)
  return {"hr": rng.integers(0, 256, shape, dtype=np.uint8),
          "lr": rng.integers(0, 256, shape, dtype=np.uint8),
          "label": np.repeat(ids, args.k).astype(np.int32)}


def random_variables(model, image_size, seed):
  """Random variables of the model's shapes, without compiling its init.

  A jitted init of HRNet costs as much compile time as a step (minutes on
  this CPU). Kernels ~ N(0, 0.5 / fan_in) (as reference/torch_models.py's
  randomize: keeps HRNet's residual sums well-scaled), BN scale 1, biases
  and running means 0, running variances 1.
  """
  shapes = factory.abstract_variables(model, (1, *image_size, 3))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(0.5 / fan_in)
              ).astype(np.float32)
    value = 1.0 if name in ("scale", "var") else 0.0
    return np.full(leaf.shape, value, np.float32)
  return dict(jax.tree_util.tree_map_with_path(fill, shapes))


@dataclasses.dataclass
class Step:
  """A phase's jitted step and everything to call it with."""
  phase: int
  step: Any  # jitted: step(state, batch, rng, *extra) -> (state, metrics)
  state: Any
  batch: dict
  rng: Any
  extra: tuple  # (teacher variables,) in phase 2, else ().
  model: Any
  teacher: Any
  loss_config: dict

  @property
  def args(self) -> tuple:
    return (self.state, self.batch, self.rng, *self.extra)


def build_step(phase: int, config, args, batch_np) -> Step:
  """Phase 1 (teacher, L_ID) or 2 (student + frozen teacher, L_TOTAL):
  the training loop's own `loop.build_step`, on random variables."""
  mesh = sharding.make_data_mesh(1)
  record = phases.PHASES[phase - 1]
  built = loop.build_step(config, record, args.num_classes, 1000, mesh)
  size = tuple(args.image_size)
  variables = random_variables(built.model, size, seed=0)
  state = sharding.put_replicated(
      steps.create_state(variables, built.optimizer.tx), mesh)
  keys = ("hr", "lr", "label") if record.uses_teacher else ("hr", "label")
  batch = sharding.put_batch({k: batch_np[k] for k in keys}, mesh)
  rng = sharding.put_replicated(jax.random.key(1), mesh)
  extra = () if built.teacher is None else (sharding.put_replicated(
      random_variables(built.teacher, size, 2), mesh),)
  return Step(phase, built.step, state, batch, rng, extra, built.model,
              built.teacher, config.loss.to_dict())


def compile_step(built: Step) -> tuple[Any, float, bool]:
  """(the compiled step, seconds to lower and compile it, whether the
  lowered program holds optimisation barriers: `layers.materialize`)."""
  t0 = time.perf_counter()
  lowered = built.step.lower(*built.args)
  barriers = "optimization_barrier" in lowered.as_text()
  compiled = lowered.compile()
  return compiled, time.perf_counter() - t0, barriers


def run_steps(compiled, built: Step, warmup: int, steps: int) -> dict:
  """Runs the compiled step warmup + steps times on the same batch, each
  step waited for (its loss read back); the timed steps' milliseconds and
  the first and last loss. `built.state` follows the (donated) state."""
  times, losses = [], []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    built.state, metrics = compiled(*built.args)
    losses.append(float(metrics["loss"]))
    if i >= warmup:
      times.append(1e3 * (time.perf_counter() - t0))
  return dict(step_ms=times, first_loss=losses[0], last_loss=losses[-1])
