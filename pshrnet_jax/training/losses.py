"""The PS-HRNet losses (SPEC 2), pure jnp functions of the models' aux dicts.

L_ID    = 1.15 * CE_label_smoothing(l_c) + 0.2 * sum_{Seq1..Seq5} BH(Seq_n)
L_SR    = mean |SR(LR) - HR|
L_PS    = sum over the chosen outputs of mean |teacher(HR) - student(LR)|
L_TOTAL = L_ID + 0.5 * L_SR + 0.5 * L_PS

All arithmetic is float32 whatever the input dtype. Pairs without a real HR
original (genuinely LR images) are masked out of L_SR and L_PS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import jax
import jax.numpy as jnp

SEQ_KEYS = ("seq1", "seq2", "seq3", "seq4", "seq5")
# Outputs the pseudo-siamese loss may compare ("logits" is the paper's l_c).
PS_KEYS = SEQ_KEYS + ("logits", "l_f")
# SPEC 2: the paper's L_PS set {Seq1, Seq4, Seq5, l_c} (the released code
# uses Seq1..Seq5 and l_c).
PAPER_PS_KEYS = ("seq1", "seq4", "seq5", "logits")

# torchreid's TripletLoss clamps squared distances here before the sqrt, which
# also keeps the sqrt's gradient finite when two features coincide.
_MIN_SQUARED_DISTANCE = 1e-12


def sequence_keys(aux: Mapping[str, jax.Array]) -> tuple[str, ...]:
  """The representation sequences in aux (HRNet-ReID: seq1..seq5;
  single-sequence extractors such as ResNet-50: seq5)."""
  keys = tuple(k for k in SEQ_KEYS if k in aux)
  if not keys:
    raise KeyError(f"the model's aux dict has none of {SEQ_KEYS}; it has "
                   f"{sorted(aux)}")
  return keys


def present_keys(keys: Sequence[str],
                 aux: Mapping[str, jax.Array]) -> tuple[str, ...]:
  """The configured L_PS outputs the model has, in order (the paper's set
  becomes {Seq5, l_c} for a single-sequence extractor); unknown names stay
  for pseudo_siamese_terms to reject."""
  kept = tuple(k for k in keys if k in aux or k not in PS_KEYS)
  if not kept:
    raise ValueError(f"pseudo_siamese: none of the configured outputs "
                     f"{list(keys)} is produced by this model (it has "
                     f"{sorted(aux)}); set --config.loss.ps_features")
  return kept


def masked_mean(values: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """The float32 mean of (B, ...) `values`, or of the rows where the (B,)
  `mask` is True: a dropped row contributes exactly zero, value and
  gradient; no kept row gives 0."""
  values = values.astype(jnp.float32)
  if mask is None:
    return jnp.mean(values)
  if mask.shape != values.shape[:1]:
    raise ValueError(f"mask {mask.shape} does not match the batch of "
                     f"{values.shape}")
  rows = jnp.mean(values.reshape(values.shape[0], -1), axis=1)
  weights = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask, rows, 0.0)) / jnp.maximum(
      jnp.sum(weights), 1.0)


def cross_entropy_label_smoothing(logits: jax.Array, labels: jax.Array,
                                  epsilon: float = 0.1) -> jax.Array:
  """Mean cross entropy of (B, M) logits against (1 - eps) * onehot + eps / M:
  torch.nn.CrossEntropyLoss(label_smoothing=eps)."""
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(
        f"cross_entropy_label_smoothing expects logits (B, M) and labels (B,);"
        f" got logits {logits.shape} and labels {labels.shape}")
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  targets = ((1.0 - epsilon) * jax.nn.one_hot(labels, num_classes)
             + epsilon / num_classes)
  return jnp.mean(-jnp.sum(targets * log_probs, axis=-1))


def pairwise_euclidean(features: jax.Array) -> jax.Array:
  """(B, B) distances between the rows of (B, D) `features`, as torchreid:
  sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12)), the Gram matrix at HIGHEST
  precision (with an accelerator's TF32/bf16 passes the expansion cancels)."""
  features = features.astype(jnp.float32)
  squared_norms = jnp.sum(jnp.square(features), axis=1)
  gram = jnp.matmul(features, features.T, precision=jax.lax.Precision.HIGHEST)
  squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram
  return jnp.sqrt(jnp.maximum(squared, _MIN_SQUARED_DISTANCE))


def batch_hard_triplet(features: jax.Array, labels: jax.Array,
                       margin: float) -> jax.Array:
  """Batch-hard triplet loss of (B, D) features, as torchreid's TripletLoss.

  Mean over anchors of max(0, d_ap - d_an + margin), with the hardest
  positive (the anchor itself included, as in torchreid) and the hardest
  negative; an anchor without negatives (torchreid would fail) gives 0.
  """
  if features.ndim != 2 or labels.shape != features.shape[:1]:
    raise ValueError(
        f"batch_hard_triplet expects features (B, D) and labels (B,); got "
        f"features {features.shape} and labels {labels.shape}")
  dist = pairwise_euclidean(features)
  same_id = labels[:, None] == labels[None, :]
  # Distances are >= 1e-6, so -1 never wins the max over positives; +inf only
  # wins the min when there is no negative, and then the hinge is 0.
  hardest_positive = jnp.max(jnp.where(same_id, dist, -1.0), axis=1)
  hardest_negative = jnp.min(jnp.where(same_id, jnp.inf, dist), axis=1)
  return jnp.mean(
      jax.nn.relu(hardest_positive - hardest_negative + margin))


def _require_keys(aux: Mapping[str, jax.Array], keys: Sequence[str],
                  what: str) -> None:
  missing = [k for k in keys if k not in aux]
  if missing:
    raise KeyError(f"{what}: the model's aux dict has no {missing}; it has "
                   f"{sorted(aux)}")


def id_loss(aux: Mapping[str, jax.Array], labels: jax.Array, *,
            ce_weight: float = 1.15, label_smoothing: float = 0.1,
            triplet_weight: float = 0.2, margin: float,
            triplet_features: Sequence[str] = SEQ_KEYS,
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_ID = ce_weight * CE(logits) + triplet_weight * sum_n BH(aux[n]).

  Args:
    aux: the model's aux dict (needs `logits` and the `triplet_features`).
    labels: (B,) integer identities in [0, M).
    ce_weight, label_smoothing, triplet_weight: paper 1.15, 0.1, 0.2.
    margin: triplet margin (paper 0.1, released code 0.3).
    triplet_features: the aux keys the batch-hard terms are summed over.

  Returns:
    (L_ID, metrics): `id`, `ce`, `triplet` (unweighted) and `triplet_<key>`.
  """
  _require_keys(aux, ("logits",) + tuple(triplet_features), "id_loss")
  metrics = {
      "ce": cross_entropy_label_smoothing(aux["logits"], labels,
                                          label_smoothing)}
  triplet = jnp.zeros((), jnp.float32)
  for key in triplet_features:
    term = batch_hard_triplet(aux[key], labels, margin)
    metrics[f"triplet_{key}"] = term
    triplet = triplet + term
  metrics["triplet"] = triplet
  metrics["id"] = ce_weight * metrics["ce"] + triplet_weight * triplet
  return metrics["id"], metrics


def sr_l1(sr: jax.Array, hr: jax.Array,
          mask: Optional[jax.Array] = None) -> jax.Array:
  """L_SR = mean |sr - hr| (over the pairs `mask` keeps, see masked_mean)."""
  if sr.shape != hr.shape:
    raise ValueError(f"sr_l1: SR output {sr.shape} and HR image {hr.shape} "
                     "differ in shape")
  return masked_mean(jnp.abs(sr.astype(jnp.float32) - hr.astype(jnp.float32)),
                     mask)


def pseudo_siamese_terms(teacher_aux: Mapping[str, jax.Array],
                         student_aux: Mapping[str, jax.Array],
                         keys: Sequence[str],
                         mask: Optional[jax.Array] = None
                         ) -> dict[str, jax.Array]:
  """{key: mean |teacher - student|} for a non-empty subset of PS_KEYS; L_PS
  is their sum. The teacher side gets no gradient; `mask` as in masked_mean.
  """
  keys = tuple(keys)
  if not keys:
    raise ValueError("pseudo_siamese: no outputs to compare (keys is empty); "
                     "switch the term off with its weight instead")
  unknown = [k for k in keys if k not in PS_KEYS]
  if unknown:
    raise ValueError(f"pseudo_siamese: unknown outputs {unknown}; choose from"
                     f" {list(PS_KEYS)}")
  _require_keys(teacher_aux, keys, "pseudo_siamese (teacher)")
  _require_keys(student_aux, keys, "pseudo_siamese (student)")
  terms = {}
  for key in keys:
    teacher = jax.lax.stop_gradient(teacher_aux[key]).astype(jnp.float32)
    student = student_aux[key].astype(jnp.float32)
    if teacher.shape != student.shape:
      raise ValueError(f"pseudo_siamese: '{key}' is {teacher.shape} for the "
                       f"teacher but {student.shape} for the student")
    terms[key] = masked_mean(jnp.abs(teacher - student), mask)
  return terms


def _is_off(weight) -> bool:
  # Only a Python number can switch a term off; a traced weight keeps it on.
  return isinstance(weight, (int, float)) and weight == 0


def total_loss(student_aux: Mapping[str, jax.Array],
               teacher_aux: Optional[Mapping[str, jax.Array]],
               hr: Optional[jax.Array], labels: jax.Array, *,
               margin: float, ce_weight: float = 1.15,
               label_smoothing: float = 0.1, triplet_weight: float = 0.2,
               triplet_features: Sequence[str] = SEQ_KEYS,
               id_weight: float = 1.0,
               sr_weight: float = 0.5, ps_weight: float = 0.5,
               ps_features: Sequence[str] = PAPER_PS_KEYS,
               pair_mask: Optional[jax.Array] = None,
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_TOTAL = id_weight * L_ID + sr_weight * L_SR + ps_weight * L_PS
  (phase 2; the paper's id_weight is 1).

  A term whose weight is the Python number 0 (Tables II-IV's ablations) is
  not computed (its `hr` / `teacher_aux` may be None) and absent from
  metrics: with id_weight=0 and ps_weight=0 only L_SR trains (Table III's
  "Solo SR").

  Args:
    student_aux: the student's aux dict on the LR images (with `sr` for L_SR).
    teacher_aux: the frozen teacher's aux dict on the HR images, for L_PS.
    hr: the normalised HR images, target of L_SR.
    labels: (B,) integer identities.
    margin, ce_weight, label_smoothing, triplet_weight, triplet_features:
      see id_loss.
    id_weight: 1 in the paper; 0 leaves L_ID (CE and triplet) out.
    sr_weight, ps_weight: paper 0.5 each.
    ps_features: outputs compared by L_PS (any subset of PS_KEYS).
    pair_mask: (B,) bool, True for pairs with a real HR original (L_SR and
      L_PS average over those only); None: every pair.

  Returns:
    (L_TOTAL, metrics): `loss` and, for the terms that are on, id_loss's
    metrics, `sr`, `ps` and `ps_<key>` (unweighted).
  """
  loss, metrics = jnp.zeros((), jnp.float32), {}
  if not _is_off(id_weight):
    id_term, metrics = id_loss(
        student_aux, labels, ce_weight=ce_weight,
        label_smoothing=label_smoothing, triplet_weight=triplet_weight,
        margin=margin, triplet_features=triplet_features)
    loss = id_weight * id_term
  if not _is_off(sr_weight):
    if hr is None or "sr" not in student_aux:
      raise ValueError(
          f"total_loss: L_SR is on (sr_weight={sr_weight}) but needs the HR "
          f"images (hr is {'missing' if hr is None else 'given'}) and the "
          f"student's 'sr' output (aux keys {sorted(student_aux)}); set "
          "sr_weight=0 to switch it off")
    metrics["sr"] = sr_l1(student_aux["sr"], hr, pair_mask)
    loss = loss + sr_weight * metrics["sr"]
  if not _is_off(ps_weight):
    if teacher_aux is None:
      raise ValueError(
          f"total_loss: L_PS is on (ps_weight={ps_weight}) but no teacher_aux"
          " was given; set ps_weight=0 to switch it off")
    terms = pseudo_siamese_terms(teacher_aux, student_aux, ps_features,
                                 pair_mask)
    metrics.update({f"ps_{key}": value for key, value in terms.items()})
    metrics["ps"] = sum(terms.values())
    loss = loss + ps_weight * metrics["ps"]
  metrics["loss"] = loss
  return loss, metrics
