"""The P x K identity sampler as a pure function of (seed, epoch).

A training batch holds P distinct identities with K images each (SPEC 3:
4 x 6 = 24 HR/LR pairs; the released code uses 6 x 4). The plan of an epoch
is computed from (seed, epoch) alone, so any process, worker count or resumed
run derives the same batches for the same step.

The epoch follows torchreid's `RandomIdentitySampler`, made fixed-length:

1. Groups. The image indices of each identity are shuffled and cut into
   `n // K` groups of K (a remainder shorter than K is dropped). An identity
   with fewer than K images gives one group of K indices drawn with
   replacement. So identity i contributes `c_i = max(1, n_i // K)` groups.
2. Steps. torchreid draws P identities at random until fewer than P have
   groups left, so its epoch length depends on the seed. Here the epoch has
   `T` steps, the largest T for which P distinct identities per step are
   always possible: the largest T with `sum_i min(c_i, T) >= P * T`. When no
   identity owns more than 1/P of all groups (every real re-ID set), this is
   `sum_i c_i // P`, torchreid's expected length. Groups beyond what T steps
   can hold are dropped: at most T per identity, and the excess falls on the
   identities placed last in this epoch's random order.
3. Packing. The kept groups are laid out identity by identity in a random
   identity order (an identity's groups are adjacent), and group j goes to
   step `j % T`. An identity has at most T groups, so its groups land in
   different steps: each step gets exactly P distinct identities. The step
   order and the identity order inside a step are then shuffled.

A row of the plan is identity-major: `row[p * K:(p + 1) * K]` are the K image
indices of the step's p-th identity.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data_pipelines.errors import SamplerError

# Distinct SeedSequence streams for the sampler and the augmentation, so the
# two never draw from the same Philox key.
SAMPLER_STREAM = 0
AUGMENT_STREAM = 1


def _group_counts(pids: Sequence[int], k: int) -> tuple[np.ndarray, list[np.ndarray]]:
  """Sorted identities' image indices and their group counts."""
  pids = np.asarray(pids)
  if pids.ndim != 1 or pids.size == 0:
    raise SamplerError(f"need a non-empty 1-D list of pids, got shape {pids.shape}")
  order = np.argsort(pids, kind="stable")
  _, starts = np.unique(pids[order], return_index=True)
  members = np.split(order, starts[1:])
  counts = np.array([max(1, len(m) // k) for m in members], dtype=np.int64)
  return counts, members


def _max_steps(counts: np.ndarray, p: int) -> int:
  """The largest T with sum(min(c_i, T)) >= P * T (see module docstring)."""
  # sum(min(c, T)) - P*T is concave in T and >= 0 at T = 0, so the feasible T
  # form an interval [0, T*]: binary search for its end.
  lo, hi = 0, int(counts.sum()) // p
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if int(np.minimum(counts, mid).sum()) >= p * mid:
      lo = mid
    else:
      hi = mid - 1
  return lo


def steps_per_epoch(pids: Sequence[int], p: int, k: int) -> int:
  """Number of P x K steps in one epoch; independent of seed and epoch.

  Args:
    pids: the identity of each training record (any integers).
    p: identities per batch.
    k: images per identity in a batch.

  Returns:
    T, the number of rows of every `pk_epoch_plan` for these pids.

  Raises:
    SamplerError: fewer than P distinct identities.
  """
  if p < 1 or k < 1:
    raise SamplerError(f"P and K must be >= 1, got P={p}, K={k}")
  counts, _ = _group_counts(pids, k)
  if len(counts) < p:
    raise SamplerError(
        f"P x K sampling needs at least P={p} distinct identities, the "
        f"training set has {len(counts)}")
  return _max_steps(counts, p)


def pk_epoch_plan(pids: Sequence[int], p: int, k: int, seed: int,
                  epoch: int) -> np.ndarray:
  """The batches of one epoch, as indices into the record list.

  Args:
    pids: the identity of each training record.
    p: identities per batch.
    k: images per identity in a batch.
    seed: the run's seed.
    epoch: the epoch number (0-based).

  Returns:
    int64 array of shape (steps_per_epoch(pids, p, k), p * k). Each row holds
    P distinct identities, each with K indices, identity-major.

  Raises:
    SamplerError: fewer than P distinct identities.
  """
  num_steps = steps_per_epoch(pids, p, k)
  counts, members = _group_counts(pids, k)
  rng = np.random.Generator(np.random.Philox(
      np.random.SeedSequence([seed, SAMPLER_STREAM, epoch])))

  # Groups, in a random identity order; an identity keeps at most num_steps.
  groups = []
  for ident in rng.permutation(len(members)):
    idx = members[ident]
    if len(idx) < k:
      groups.append(rng.choice(idx, size=(1, k), replace=True))
    else:
      shuffled = rng.permutation(idx)[: counts[ident] * k]
      groups.append(shuffled.reshape(counts[ident], k)[:num_steps])
  kept = np.concatenate(groups, axis=0)[: num_steps * p]

  # Group j -> step j % T, slot j // T: adjacent groups of one identity (at
  # most T of them) land in different steps.
  plan = kept.reshape(p, num_steps, k).transpose(1, 0, 2)
  plan = plan[rng.permutation(num_steps)]
  slot_order = np.argsort(rng.random((num_steps, p)), axis=1)
  plan = np.take_along_axis(plan, slot_order[:, :, None], axis=1)
  return plan.reshape(num_steps, p * k).astype(np.int64)
