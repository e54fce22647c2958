"""`steps.jit_step`'s trace sharing: a phase built again with equal settings
in one process reuses jax.jit's trace (its key); any other setting does not.
The key and the cache are the same for every extractor: the tiny ResNet-50's
step is the quickest to trace and load.
"""

import dataclasses

import jax
import numpy as np

import tiny_setup as tiny
from pshrnet_jax.training import phases
from pshrnet_jax.training import sharding
from pshrnet_jax.training import steps

STEP_RNG_SEED = 1


def _config(hrnet_lr=tiny.HRNET_LR):
  config = tiny.tiny_config()
  config.model.backbone = "resnet50"
  config.optim.groups.hrnet.lr = hrnet_lr  # The extractor's group.
  return config


def test_an_equal_phase_built_again_reuses_the_trace_and_no_other():
  """`loop.build_step` twice with the same settings: one trace (jax.jit's
  cache, by `jit_step`'s key); another learning rate: traced anew, another
  update."""
  config, batch = _config(), tiny.tiny_batch()
  mesh = sharding.make_data_mesh(1)
  traced = []

  def counted(*args, **kwargs):
    traced.append(1)  # Runs only while JAX traces the step.
    return steps.phase1_step(*args, **kwargs)
  phase = dataclasses.replace(phases.TEACHER, step=counted)
  variables = tiny.init_variables(
      phase.build_model(config.model, tiny.NUM_TRAIN_IDS), config.seed)

  def first_update(run_config):
    built = tiny.build_step(run_config, phase, mesh)
    state = sharding.put_replicated(
        steps.create_state(variables, built.optimizer.tx), mesh)
    new_state, _ = built.step(
        state, sharding.put_batch(batch, mesh),
        sharding.put_replicated(jax.random.key(STEP_RNG_SEED), mesh))
    return jax.device_get(new_state.params["head"]["fc1"]["kernel"])

  first = first_update(config)
  again = first_update(_config())
  assert len(traced) == 1
  np.testing.assert_array_equal(again, first)
  other = first_update(_config(hrnet_lr=2 * tiny.HRNET_LR))
  assert len(traced) == 2
  # SGD's first update is linear in the learning rate, and doubling it is
  # exact in floating point (lr * d and 2 lr * d round alike). What remains
  # is the rounding of p + update and of (p + update) - p: at most half a
  # unit in the last place of the largest magnitude M each, so
  # |(other - start) - 2 (first - start)| <= 1 + 2 = 3 ulp(M).
  start = variables["params"]["head"]["fc1"]["kernel"]
  ulp = np.spacing(np.float32(max(np.abs(start).max(), np.abs(other).max())))
  assert np.abs(first - start).max() > 1e3 * ulp
  np.testing.assert_allclose(other - start, 2 * (first - start), rtol=0,
                             atol=3 * ulp)
