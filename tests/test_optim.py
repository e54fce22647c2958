"""Tests for pshrnet_jax.optim: torch.optim.SGD parity, schedules, groups."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from pshrnet_jax.training import optim
from pshrnet_jax import errors


def _config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({
      "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "epochs": 70,
      "decay_epochs": 30, "decay_factor": 0.1, "warmup_epochs": 0,
      "warmup_lr": 3e-4,
      "groups": {"hrnet": {"pattern": r"^(?!sr/)", "lr": 8.5e-3},
                 "sr": {"pattern": r"^sr/", "lr": 8.5e-4}},
  })
  config.update(overrides)
  return config


def _params(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  # Paths: reid/backbone/kernel (6), reid/bias (2), sr/input/kernel (4).
  return {"reid": {"backbone": {"kernel": normal(3, 2)}, "bias": normal(2)},
          "sr": {"input": {"kernel": normal(2, 2)}}}


# --- exact agreement with torch.optim.SGD -----------------------------------


# The SPEC's weight decay, and a large one that makes an ordering mistake
# (decay after momentum, or scaled by the LR) far exceed the 1e-6 tolerance.
@pytest.mark.parametrize("nesterov, weight_decay",
                         [(True, 5e-4), (True, 0.05), (False, 0.05)])
def test_matches_torch_sgd_with_warmup_decay_and_two_groups(nesterov,
                                                            weight_decay):
  # 2 steps per epoch, warm-up for epoch 0, decay every 2 epochs: steps 0-1
  # warm up at 0.01, steps 2-3 run at the base LRs (0.5 / 0.05), steps 4-6
  # (epochs 2-3) at a tenth of them. Large LRs make any mismatch visible.
  steps_per_epoch, num_steps = 2, 7
  config = _config(nesterov=nesterov, weight_decay=weight_decay,
                   decay_epochs=2, warmup_epochs=1, warmup_lr=0.01, epochs=4)
  config.groups.hrnet.lr = 0.5
  config.groups.sr.lr = 0.05
  params = _params()
  opt = optim.make_optimizer(config, params, steps_per_epoch)

  torch_params = jax.tree_util.tree_map(
      lambda x: torch.tensor(np.asarray(x), requires_grad=True), params)
  torch_opt = torch.optim.SGD(
      [{"params": [torch_params["reid"]["backbone"]["kernel"],
                   torch_params["reid"]["bias"]], "lr": 0.5},
       {"params": [torch_params["sr"]["input"]["kernel"]], "lr": 0.05}],
      lr=0.5, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
  # torch's StepLR with a constant warm-up: lr = base * lambda(epoch).
  torch_sched = torch.optim.lr_scheduler.LambdaLR(torch_opt, [
      lambda e, b=base: 0.01 / b if e < 1 else 0.1 ** (e // 2)
      for base in (0.5, 0.05)])

  @jax.jit
  def update(grads, state, params):
    updates, state = opt.tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = opt.tx.init(params)
  rng = np.random.default_rng(1)
  for step in range(num_steps):
    lrs = opt.learning_rates(step)
    np.testing.assert_allclose(lrs["hrnet"], torch_opt.param_groups[0]["lr"],
                               rtol=1e-6)
    np.testing.assert_allclose(lrs["sr"], torch_opt.param_groups[1]["lr"],
                               rtol=1e-6)
    grads = jax.tree_util.tree_map(
        lambda x: rng.normal(size=x.shape).astype(np.float32), params)
    for p, g in zip(jax.tree_util.tree_leaves(torch_params),
                    jax.tree_util.tree_leaves(grads)):
      p.grad = torch.from_numpy(g.copy())
    torch_opt.step()
    if (step + 1) % steps_per_epoch == 0:
      torch_sched.step()
    params, state = update(grads, state, params)
    # Relative: the params grow to ~4.5, where a float32 ulp is 4.8e-7; the
    # two frameworks differ by at most one ulp (measured).
    for ours, theirs in zip(jax.tree_util.tree_leaves(params),
                            jax.tree_util.tree_leaves(torch_params)):
      np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-6,
                                 atol=1e-7, err_msg=f"step {step}")


# --- schedule ---------------------------------------------------------------


def test_learning_rates_by_hand_released_code_warmup():
  # 10 steps per epoch; warm-up epochs 0-4 at 3e-4; then 8.5e-3 / 8.5e-4,
  # x0.1 at epochs 30 and 60 (counted from epoch 0, warm-up included).
  config = _config(warmup_epochs=5, epochs=71)
  opt = optim.make_optimizer(config, _params(), steps_per_epoch=10)
  expected = {  # step: (hrnet, sr)
      0: (3e-4, 3e-4),      # epoch 0, warm-up
      49: (3e-4, 3e-4),     # epoch 4, last warm-up step
      50: (8.5e-3, 8.5e-4),  # epoch 5
      299: (8.5e-3, 8.5e-4),  # epoch 29
      300: (8.5e-4, 8.5e-5),  # epoch 30: first decay
      599: (8.5e-4, 8.5e-5),  # epoch 59
      600: (8.5e-5, 8.5e-6),  # epoch 60: second decay
      709: (8.5e-5, 8.5e-6),  # epoch 70, the last of 71
  }
  for step, (hrnet, sr) in expected.items():
    lrs = opt.learning_rates(step)
    np.testing.assert_allclose([lrs["hrnet"], lrs["sr"]], [hrnet, sr],
                               rtol=1e-6, err_msg=f"step {step}")
  # Traced step counters give the same values.
  traced = jax.jit(opt.learning_rates)(jnp.int32(300))
  np.testing.assert_allclose(traced["hrnet"], 8.5e-4, rtol=1e-6)


def test_schedule_without_warmup_ignores_warmup_lr():
  schedule = optim.step_decay_schedule(0.1, steps_per_epoch=3, decay_epochs=2,
                                       decay_factor=0.5, warmup_lr=123.0)
  # epochs 0-1 (steps 0-5): 0.1; epochs 2-3 (steps 6-11): 0.05; step 12: 0.025
  got = [float(schedule(s)) for s in (0, 5, 6, 11, 12)]
  np.testing.assert_allclose(got, [0.1, 0.1, 0.05, 0.05, 0.025], rtol=1e-6)


# --- groups -----------------------------------------------------------------


def test_frozen_and_zero_lr_groups_get_no_update():
  params = _params()
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  for frozen_group in ({"pattern": r"^sr/", "frozen": True},
                       {"pattern": r"^sr/", "lr": 0.0}):
    config = _config()
    config.groups.sr = frozen_group
    opt = optim.make_optimizer(config, params, steps_per_epoch=1)
    state = opt.tx.init(params)
    new = params
    for _ in range(3):
      updates, state = opt.tx.update(grads, state, new)
      new = optax.apply_updates(new, updates)
    np.testing.assert_array_equal(new["sr"]["input"]["kernel"],
                                  params["sr"]["input"]["kernel"])
    # The other group moved: first step alone is -lr * (1 + 0.9) * (g + wd p).
    assert not np.allclose(new["reid"]["bias"], params["reid"]["bias"])
    assert opt.learning_rates(0)["sr"] == 0.0
    assert "frozen" in opt.summary


def test_group_matching_no_parameter_is_reported():
  # Phase 1: the teacher has no 'sr' parameters.
  params = {"reid": _params()["reid"]}
  opt = optim.make_optimizer(_config(), params, steps_per_epoch=5)
  assert set(opt.learning_rates(0)) == {"hrnet"}
  lines = opt.summary.splitlines()
  # header, table header, hrnet row, sr row
  assert len(lines) == 4
  hrnet, sr = lines[2].split(), lines[3].split()
  # hrnet: 2 tensors, 6 + 2 = 8 parameters, paths listed.
  assert hrnet[0] == "hrnet" and hrnet[4:6] == ["2", "8"]
  assert "reid/backbone/kernel," in hrnet and "reid/bias" in hrnet
  assert sr[0] == "sr" and sr[4:6] == ["0", "0"]
  assert lines[3].endswith("(no parameters)")
  assert "lr x0.1 at epochs 30, 60" in lines[0]


def test_describe_groups_labels_only():
  labels = {"a": {"w": "x", "b": "x"}, "c": "y"}
  table = optim.describe_groups(labels).splitlines()
  assert table[1].split() == ["x", "2", "?", "a/b,", "a/w"]
  assert table[2].split() == ["y", "1", "?", "c"]


def test_parameter_in_no_group_is_named():
  config = _config()
  config.groups.hrnet.pattern = r"^reid/backbone/"
  with pytest.raises(errors.ParamGroupError,
                     match=r"hrnet.*sr.*1 do not: 'reid/bias' matches no"):
    optim.make_optimizer(config, _params(), steps_per_epoch=1)


def test_parameter_in_several_groups_is_named():
  config = _config()
  config.groups.hrnet.pattern = r"kernel|bias"
  with pytest.raises(
      errors.ParamGroupError,
      match=r"'sr/input/kernel' matches several groups \['hrnet', 'sr'\]"):
    optim.make_optimizer(config, _params(), steps_per_epoch=1)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.groups.sr.update({"pattern": "(sr"}), r"sr\.pattern.*regular"),
    (lambda c: c.groups.sr.update({"lrr": 1.0}), r"unknown keys \['lrr'\]"),
    (lambda c: c.groups.update({"x": {"pattern": "q"}}), r"groups\.x needs"),
    (lambda c: c.update({"momentum": 0.0}), "nesterov needs momentum"),
    (lambda c: c.update({"decay_epochs": 0}), "decay_epochs > 0"),
])
def test_bad_config_is_named(change, message):
  config = _config()
  change(config)
  with pytest.raises(errors.OptimConfigError, match=message):
    optim.make_optimizer(config, _params(), steps_per_epoch=1)


def test_missing_field_is_named():
  config = ml_collections.ConfigDict(
      {k: v for k, v in _config().items() if k != "warmup_lr"})
  with pytest.raises(errors.OptimConfigError, match="no 'warmup_lr'"):
    optim.make_optimizer(config, _params(), steps_per_epoch=1)
