"""Tests for pshrnet_jax.losses: hand-computed values and PyTorch parity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pshrnet_jax.training import losses


def torch_triplet(inputs: torch.Tensor, targets: torch.Tensor,
                  margin: float) -> torch.Tensor:
  """torchreid's TripletLoss.forward, written from its published definition."""
  n = inputs.size(0)
  dist = torch.pow(inputs, 2).sum(dim=1, keepdim=True).expand(n, n)
  dist = dist + dist.t()
  dist = torch.addmm(dist, inputs, inputs.t(), beta=1, alpha=-2)
  dist = dist.clamp(min=1e-12).sqrt()
  mask = targets.expand(n, n).eq(targets.expand(n, n).t())
  dist_ap, dist_an = [], []
  for i in range(n):
    dist_ap.append(dist[i][mask[i]].max().unsqueeze(0))
    dist_an.append(dist[i][mask[i] == 0].min().unsqueeze(0))
  dist_ap = torch.cat(dist_ap)
  dist_an = torch.cat(dist_an)
  y = torch.ones_like(dist_an)
  return torch.nn.MarginRankingLoss(margin=margin)(dist_an, dist_ap, y)


# --- cross entropy with label smoothing ----------------------------------


def test_cross_entropy_label_smoothing_by_hand():
  # logits [1, 2, 3], label 2, eps 0.1, M = 3.
  # logsumexp = 3 + log(1 + e^-1 + e^-2) = 3 + log(1.50321472) = 3.40760596
  # log p = [-2.40760596, -1.40760596, -0.40760596]
  # target = [0.1/3, 0.1/3, 0.9 + 0.1/3]
  # loss = (1 - eps) * 0.40760596 + eps * mean(-log p)
  #      = 0.9 * 0.40760596 + 0.1 * 1.40760596 = 0.50760596
  loss = losses.cross_entropy_label_smoothing(
      jnp.array([[1.0, 2.0, 3.0]]), jnp.array([2]), epsilon=0.1)
  np.testing.assert_allclose(loss, 0.50760596, rtol=1e-6)
  # eps = 0 is plain cross entropy: -log p_2 = 0.40760596.
  loss = losses.cross_entropy_label_smoothing(
      jnp.array([[1.0, 2.0, 3.0]]), jnp.array([2]), epsilon=0.0)
  np.testing.assert_allclose(loss, 0.40760596, rtol=1e-6)


def test_cross_entropy_matches_torch():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(8, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=8)
  expected = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(
      torch.from_numpy(logits), torch.from_numpy(labels)).item()
  got = losses.cross_entropy_label_smoothing(
      jnp.asarray(logits), jnp.asarray(labels), 0.1)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_cross_entropy_bf16_input_computes_in_float32():
  logits = jnp.array([[1.0, 2.0, 3.0]], jnp.bfloat16)  # exact in bf16
  loss = losses.cross_entropy_label_smoothing(logits, jnp.array([2]), 0.1)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, 0.50760596, rtol=1e-6)


def test_cross_entropy_bad_shapes():
  with pytest.raises(ValueError, match=r"logits \(3,\)"):
    losses.cross_entropy_label_smoothing(jnp.zeros(3), jnp.zeros(3, int))


# --- batch-hard triplet ------------------------------------------------------

# x0 = (0, 0) and x1 = (3, 4) are identity 0, x2 = (3, 0) is identity 1.
# d01 = 5, d02 = 3, d12 = 4; self distances are sqrt(1e-12) = 1e-6.
_POINTS = jnp.array([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]])
_POINT_IDS = jnp.array([0, 0, 1])


def test_batch_hard_triplet_by_hand():
  # anchor 0: d_ap = max(1e-6, 5) = 5, d_an = 3 -> 5 - 3 + 0.3 = 2.3
  # anchor 1: d_ap = 5, d_an = 4            -> 5 - 4 + 0.3 = 1.3
  # anchor 2: d_ap = 1e-6 (itself), d_an = min(3, 4) = 3
  #           -> 1e-6 - 3 + 0.3 < 0, hinge inactive -> 0
  # mean = (2.3 + 1.3 + 0) / 3 = 1.2
  loss = losses.batch_hard_triplet(_POINTS, _POINT_IDS, margin=0.3)
  np.testing.assert_allclose(loss, 1.2, rtol=1e-6)


def test_batch_hard_triplet_self_is_a_positive():
  # margin 4: anchor 0 -> 5 - 3 + 4 = 6, anchor 1 -> 5 - 4 + 4 = 5,
  # anchor 2 (alone in its identity) -> d_ap = itself = 1e-6:
  # 1e-6 - 3 + 4 = 1.000001; mean = 12.000001 / 3 = 4.00000033
  loss = losses.batch_hard_triplet(_POINTS, _POINT_IDS, margin=4.0)
  np.testing.assert_allclose(loss, 12.000001 / 3, rtol=1e-7)


def test_batch_hard_triplet_all_hinges_inactive():
  # Two tight pairs 3 apart: every d_ap = 1, every d_an = 3;
  # 1 - 3 + 0.3 < 0 for every anchor -> exactly 0.
  points = jnp.array([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
  loss = losses.batch_hard_triplet(points, jnp.array([0, 0, 1, 1]), 0.3)
  assert float(loss) == 0.0


def test_batch_hard_triplet_without_negatives_is_zero():
  loss = losses.batch_hard_triplet(_POINTS, jnp.array([0, 0, 0]), 0.3)
  assert float(loss) == 0.0


def test_batch_hard_triplet_matches_torchreid_value_and_gradient():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(12, 16)).astype(np.float32)
  labels = np.repeat(np.arange(4), 3)
  rng.shuffle(labels)
  for margin in (0.1, 0.3, 3.0):
    torch_features = torch.tensor(features, requires_grad=True)
    expected = torch_triplet(torch_features, torch.from_numpy(labels), margin)
    expected.backward()
    got, grad = jax.value_and_grad(losses.batch_hard_triplet)(
        jnp.asarray(features), jnp.asarray(labels), margin)
    np.testing.assert_allclose(got, expected.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, torch_features.grad.numpy(), atol=1e-6)


def test_batch_hard_triplet_gradient_finite_when_features_coincide():
  # Samples 0 and 1 (same id) and sample 2 (other id) are the same point:
  # every distance among them sits at the 1e-12 clamp.
  features = jnp.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [5.0, 5.0]])
  labels = jnp.array([0, 0, 1, 1])
  loss, grad = jax.value_and_grad(losses.batch_hard_triplet)(
      features, labels, 0.3)
  assert np.all(np.isfinite(grad))
  # anchors 0, 1: d_ap = d_an = 1e-6 -> 0.3; anchor 2: d_ap = 5 (to x3),
  # d_an = 1e-6 -> 5.3; anchor 3: d_ap = 5, d_an = 5 -> 0.3. mean = 6.2 / 4
  np.testing.assert_allclose(loss, 6.2 / 4, rtol=1e-6)


def test_batch_hard_triplet_bad_shapes():
  with pytest.raises(ValueError, match=r"labels \(2,\)"):
    losses.batch_hard_triplet(_POINTS, jnp.array([0, 1]), 0.3)


# --- L_ID ----------------------------------------------------------------


def _random_aux(rng: np.random.Generator, batch: int, num_classes: int
                ) -> dict[str, np.ndarray]:
  aux = {key: rng.normal(size=(batch, 6)).astype(np.float32)
         for key in losses.SEQ_KEYS}
  aux["l_f"] = rng.normal(size=(batch, 4)).astype(np.float32)
  aux["logits"] = rng.normal(size=(batch, num_classes)).astype(np.float32)
  aux["sr"] = rng.normal(size=(batch, 4, 2, 3)).astype(np.float32)
  return aux


def test_id_loss_matches_torch_composition():
  rng = np.random.default_rng(2)
  aux = _random_aux(rng, 8, 4)
  labels = np.repeat(np.arange(4), 2)
  torch_labels = torch.from_numpy(labels)
  ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(
      torch.from_numpy(aux["logits"]), torch_labels).item()
  triplets = [torch_triplet(torch.from_numpy(aux[k]), torch_labels, 0.3).item()
              for k in losses.SEQ_KEYS]
  loss, metrics = losses.id_loss(
      {k: jnp.asarray(v) for k, v in aux.items()}, jnp.asarray(labels),
      margin=0.3)
  np.testing.assert_allclose(loss, 1.15 * ce + 0.2 * sum(triplets), rtol=1e-5)
  np.testing.assert_allclose(metrics["ce"], ce, rtol=1e-6)
  np.testing.assert_allclose(metrics["triplet"], sum(triplets), rtol=1e-5)
  for key, value in zip(losses.SEQ_KEYS, triplets):
    np.testing.assert_allclose(metrics[f"triplet_{key}"], value, rtol=1e-5)
  assert metrics["id"] is loss


def test_id_loss_missing_key_names_it():
  with pytest.raises(KeyError, match="seq3"):
    losses.id_loss({"logits": jnp.zeros((2, 3))}, jnp.array([0, 1]),
                   margin=0.3, triplet_features=("seq3",))


# --- L_SR and L_PS -------------------------------------------------------


def test_sr_l1_by_hand():
  # |[[0, 1], [2, 3]] - [[1, 1], [0, 3]]| = [1, 0, 2, 0] -> mean 0.75
  sr = jnp.array([[0.0, 1.0], [2.0, 3.0]])
  hr = jnp.array([[1.0, 1.0], [0.0, 3.0]])
  np.testing.assert_allclose(losses.sr_l1(sr, hr), 0.75, rtol=1e-7)
  with pytest.raises(ValueError, match=r"\(2, 2\).*\(2,\)"):
    losses.sr_l1(sr, hr[0])


_TEACHER = {"seq1": jnp.array([[1.0, 2.0]]), "logits": jnp.array([[0.0, 0.0]])}
_STUDENT = {"seq1": jnp.array([[2.0, 1.0]]), "logits": jnp.array([[1.0, -3.0]])}


def _ps_l1(teacher_aux, student_aux, keys):
  """L_PS: the sum of the per-key terms."""
  return sum(losses.pseudo_siamese_terms(teacher_aux, student_aux,
                                         keys).values())


def test_pseudo_siamese_by_hand_and_teacher_gets_no_gradient():
  # seq1: |[1, 2] - [2, 1]| = [1, 1] -> 1; logits: |[0, 0] - [1, -3]| = [1, 3]
  # -> 2; L_PS = 3.
  keys = ("seq1", "logits")
  np.testing.assert_allclose(
      _ps_l1(_TEACHER, _STUDENT, keys), 3.0, rtol=1e-7)
  grad_teacher, grad_student = jax.grad(
      _ps_l1, argnums=(0, 1))(_TEACHER, _STUDENT, keys)
  for key in keys:
    assert not np.any(grad_teacher[key])
  # d mean|t - s| / ds = sign(s - t) / n: seq1 [0.5, -0.5], logits
  # [0.5, -0.5].
  np.testing.assert_allclose(grad_student["seq1"], [[0.5, -0.5]])
  np.testing.assert_allclose(grad_student["logits"], [[0.5, -0.5]])


def test_pseudo_siamese_errors():
  with pytest.raises(ValueError, match="'feature'"):
    _ps_l1(_TEACHER, _STUDENT, ("feature",))
  with pytest.raises(ValueError, match="empty"):
    _ps_l1(_TEACHER, _STUDENT, ())
  with pytest.raises(KeyError, match="student.*seq4"):
    _ps_l1({"seq4": jnp.zeros(2)}, _STUDENT, ("seq4",))
  with pytest.raises(ValueError, match=r"'seq1'.*\(1, 2\).*\(1, 3\)"):
    _ps_l1(_TEACHER, {"seq1": jnp.zeros((1, 3))}, ("seq1",))


# --- L_TOTAL -------------------------------------------------------------


@pytest.fixture(scope="module")
def phase2_inputs():
  rng = np.random.default_rng(3)
  student = {k: jnp.asarray(v) for k, v in _random_aux(rng, 6, 3).items()}
  teacher = {k: jnp.asarray(v) for k, v in _random_aux(rng, 6, 3).items()}
  hr = jnp.asarray(rng.normal(size=(6, 4, 2, 3)).astype(np.float32))
  labels = jnp.array([0, 0, 1, 1, 2, 2])
  return student, teacher, hr, labels


def test_total_loss_composition_and_ablations(phase2_inputs):
  student, teacher, hr, labels = phase2_inputs
  id_value, _ = losses.id_loss(student, labels, margin=0.1)
  sr_value = losses.sr_l1(student["sr"], hr)
  ps_value = _ps_l1(teacher, student, losses.PAPER_PS_KEYS)

  # SR + ID + PS (paper defaults: 0.5, 0.5, {seq1, seq4, seq5, l_c}).
  loss, metrics = losses.total_loss(student, teacher, hr, labels, margin=0.1)
  np.testing.assert_allclose(loss, id_value + 0.5 * sr_value + 0.5 * ps_value,
                             rtol=1e-6)
  assert set(metrics) == {
      "loss", "id", "ce", "triplet", "sr", "ps", "ps_seq1", "ps_seq4",
      "ps_seq5", "ps_logits"} | {f"triplet_{k}" for k in losses.SEQ_KEYS}
  np.testing.assert_allclose(metrics["sr"], sr_value)
  np.testing.assert_allclose(metrics["ps"], ps_value)

  # SR + ID: no teacher needed, no PS metrics.
  loss, metrics = losses.total_loss(student, None, hr, labels, margin=0.1,
                                    ps_weight=0)
  np.testing.assert_allclose(loss, id_value + 0.5 * sr_value, rtol=1e-6)
  assert "ps" not in metrics and "sr" in metrics

  # ID only: equals id_loss.
  loss, metrics = losses.total_loss(student, None, None, labels, margin=0.1,
                                    sr_weight=0, ps_weight=0.0)
  np.testing.assert_allclose(loss, id_value, rtol=1e-7)
  assert "sr" not in metrics and "ps" not in metrics


def test_solo_sr_is_l_sr_alone(phase2_inputs):
  # Table III's Solo SR: id_weight=0 and ps_weight=0 leave 0.5 * L_SR, and
  # nothing but the SR output gets a gradient.
  student, _, hr, labels = phase2_inputs
  loss, metrics = losses.total_loss(student, None, hr, labels, margin=0.1,
                                    id_weight=0, ps_weight=0)
  assert set(metrics) == {"sr", "loss"}
  assert float(loss) == 0.5 * float(losses.sr_l1(student["sr"], hr))
  grads = jax.grad(lambda aux: losses.total_loss(
      aux, None, hr, labels, margin=0.1, id_weight=0, ps_weight=0)[0])(
          student)
  assert np.any(grads["sr"] != 0)
  assert not any(np.any(g != 0) for k, g in grads.items() if k != "sr")
  # A weight scales L_ID (CE and triplets alike).
  id_value, _ = losses.id_loss(student, labels, margin=0.1)
  loss, _ = losses.total_loss(student, None, None, labels, margin=0.1,
                              id_weight=2.0, sr_weight=0, ps_weight=0)
  assert float(loss) == float(2.0 * id_value)


@pytest.mark.parametrize("overrides,words", [
    ({"loss.id_weight": 0, "loss.ps_weight": 0, "loss.sr_weight": 0},
     ["loss.id_weight=0", "no loss term left"]),
    ({"loss.id_weight": 0, "loss.ps_weight": 0,
      "model.sr_module": "bicubic"}, ["sr_module='bicubic'",
                                      "no loss term left"]),
    ({"loss.id_weight": -1.0}, ["loss.id_weight=-1.0", ">= 0"])])
def test_a_phase2_loss_with_nothing_to_train_is_refused(overrides, words):
  import tiny_setup  # pylint: disable=g-import-not-at-top
  from pshrnet_jax import config_checks  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError) as info:
    config_checks.check_config(tiny_setup.config_with("/data", **overrides))
  for word in words:
    assert word in str(info.value), (word, str(info.value))
  # Phase 1 alone trains L_ID whatever phase 2's weights are.
  config_checks.check_config(tiny_setup.config_with(
      "/data", mode="phase1", **{"loss.id_weight": 0, "loss.ps_weight": 0,
                                  "loss.sr_weight": 0}))


def test_total_loss_under_jit_matches_eager(phase2_inputs):
  student, teacher, hr, labels = phase2_inputs
  fn = functools.partial(losses.total_loss, margin=0.3, sr_weight=0.25,
                         ps_features=losses.SEQ_KEYS + ("logits",))
  eager, eager_metrics = fn(student, teacher, hr, labels)
  jitted, jit_metrics = jax.jit(fn)(student, teacher, hr, labels)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)
  for key, value in eager_metrics.items():
    np.testing.assert_allclose(jit_metrics[key], value, rtol=1e-6)
  assert len([k for k in jit_metrics if k.startswith("ps_")]) == 6


def test_total_loss_missing_inputs(phase2_inputs):
  student, _, hr, labels = phase2_inputs
  with pytest.raises(ValueError, match="no teacher_aux"):
    losses.total_loss(student, None, hr, labels, margin=0.1)
  with pytest.raises(ValueError, match="hr is missing"):
    losses.total_loss(student, None, None, labels, margin=0.1, ps_weight=0)


# --- Pairs without an HR original, single-sequence extractors -------------


def test_masked_mean_by_hand():
  values = jnp.array([[1.0, 3.0], [10.0, 20.0], [-4.0, 0.0]])
  assert float(losses.masked_mean(values, None)) == pytest.approx(5.0)
  assert float(losses.masked_mean(values, jnp.array([True, False, True]))
               ) == pytest.approx((2.0 - 2.0) / 2)
  assert float(losses.masked_mean(values, jnp.array([False, True, False]))
               ) == pytest.approx(15.0)
  assert float(losses.masked_mean(values, jnp.zeros(3, bool))) == 0.0
  grad = jax.grad(lambda v: losses.masked_mean(
      v, jnp.array([True, False, True])))(values)
  np.testing.assert_array_equal(grad, [[0.25, 0.25], [0, 0], [0.25, 0.25]])


def test_masked_total_loss_is_the_loss_of_the_other_pairs(phase2_inputs):
  """L_SR and L_PS with pair 2 masked = the terms of the other five pairs;
  L_ID still over all six."""
  student, teacher, hr, labels = phase2_inputs
  mask = jnp.arange(6) != 2
  keep = np.flatnonzero(mask)
  take = lambda aux: {k: v[keep] for k, v in aux.items()}
  loss, metrics = losses.total_loss(student, teacher, hr, labels, margin=0.1,
                                    pair_mask=mask)
  id_value, _ = losses.id_loss(student, labels, margin=0.1)
  sr_value = losses.sr_l1(student["sr"][keep], hr[keep])
  ps_value = _ps_l1(take(teacher), take(student),
                                      losses.PAPER_PS_KEYS)
  np.testing.assert_allclose(metrics["id"], id_value, rtol=1e-6)
  np.testing.assert_allclose(metrics["sr"], sr_value, rtol=1e-6)
  np.testing.assert_allclose(metrics["ps"], ps_value, rtol=1e-6)
  np.testing.assert_allclose(loss, id_value + 0.5 * sr_value + 0.5 * ps_value,
                             rtol=1e-6)
  # The masked pair's SR output gets no gradient from L_SR.
  grad = jax.grad(lambda sr: losses.total_loss(
      dict(student, sr=sr), teacher, hr, labels, margin=0.1,
      pair_mask=mask)[0])(student["sr"])
  assert not np.any(grad[2]) and np.all(np.any(grad[keep] != 0, axis=(1, 2)))


def test_single_sequence_models():
  aux = {"seq5": jnp.zeros((2, 3)), "l_f": jnp.zeros((2, 2)),
         "logits": jnp.zeros((2, 4))}
  assert losses.sequence_keys(aux) == ("seq5",)
  assert losses.present_keys(losses.PAPER_PS_KEYS, aux) == ("seq5", "logits")
  assert losses.present_keys(("seq1", "bogus"), aux) == ("bogus",)
  with pytest.raises(ValueError, match=r"none of the configured outputs"):
    losses.present_keys(("seq1", "seq4"), aux)
  with pytest.raises(KeyError, match="none of"):
    losses.sequence_keys({"logits": aux["logits"]})
