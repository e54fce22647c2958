"""The P x K sampler: batch composition, epoch length, purity."""

import collections

import numpy as np
import pytest

from data_pipelines.pipeline import sampler
from pshrnet_jax import errors

# Identity -> image count. With K = 3: groups 4, 1 (2 images, with
# replacement), 2, 2, 1 (1 image) = 10 groups; P = 2 gives 5 steps.
_COUNTS = {5: 13, 7: 2, 9: 6, 11: 7, 3: 1}
_PIDS = [pid for pid, n in _COUNTS.items() for _ in range(n)]


def _members(pids):
  members = collections.defaultdict(list)
  for i, pid in enumerate(pids):
    members[pid].append(i)
  return members


@pytest.mark.parametrize("p,k", [(2, 3), (3, 2), (4, 1)])
def test_each_row_holds_p_distinct_identities_with_k_images(p, k):
  pids = np.array(_PIDS)
  plan = sampler.pk_epoch_plan(_PIDS, p, k, seed=1, epoch=0)
  members = _members(_PIDS)
  assert plan.shape == (sampler.steps_per_epoch(_PIDS, p, k), p * k)
  for row in plan:
    blocks = pids[row].reshape(p, k)
    # identity-major: each block of K is one identity, P different ones
    assert (blocks == blocks[:, :1]).all()
    assert len(set(blocks[:, 0])) == p
    for block in row.reshape(p, k):
      assert set(block) <= set(members[pids[block[0]]])


def test_steps_per_epoch_hand_computed():
  # groups per identity max(1, n // 3): 4 + 1 + 2 + 2 + 1 = 10 -> 10 // 2.
  assert sampler.steps_per_epoch(_PIDS, 2, 3) == 5
  # K = 2: 6 + 1 + 3 + 3 + 1 = 14 groups, P = 3 -> 4 steps.
  assert sampler.steps_per_epoch(_PIDS, 3, 2) == 4
  # One identity owns most groups (33 of 35): T must satisfy
  # min(33, T) + 1 + 1 >= 2 T, so T = 2 (not 35 // 2 = 17).
  dominated = [0] * 100 + [1, 2]
  assert sampler.steps_per_epoch(dominated, 2, 3) == 2
  plan = sampler.pk_epoch_plan(dominated, 2, 3, seed=0, epoch=0)
  assert plan.shape == (2, 6)
  for row in np.array(dominated)[plan]:
    assert len(set(row)) == 2


def test_every_group_used_once_when_nothing_dominates():
  """Identities with >= K images: each image at most once an epoch, and
  exactly n // K groups; identities with < K images: one group."""
  p, k = 2, 3
  pids = np.array(_PIDS)
  plan = sampler.pk_epoch_plan(_PIDS, p, k, seed=7, epoch=3)
  groups = plan.reshape(-1, k)
  per_identity = collections.Counter(pids[groups[:, 0]])
  assert per_identity == {5: 4, 7: 1, 9: 2, 11: 2, 3: 1}
  for pid, n in _COUNTS.items():
    used = groups[pids[groups[:, 0]] == pid].ravel()
    if n >= k:
      assert len(set(used)) == len(used) == (n // k) * k
    else:
      assert len(used) == k  # drawn with replacement from the n images


def test_small_case_exact():
  # Two identities with 2 images each, P = K = 2: one step holding all four.
  plan = sampler.pk_epoch_plan([4, 4, 9, 9], 2, 2, seed=0, epoch=0)
  assert plan.shape == (1, 4)
  assert sorted(map(sorted, plan.reshape(2, 2).tolist())) == [[0, 1], [2, 3]]


def test_plan_is_a_pure_function_of_seed_and_epoch():
  a = sampler.pk_epoch_plan(_PIDS, 2, 3, seed=11, epoch=2)
  b = sampler.pk_epoch_plan(np.array(_PIDS), 2, 3, seed=11, epoch=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, sampler.pk_epoch_plan(_PIDS, 2, 3, 11, 3))
  assert not np.array_equal(a, sampler.pk_epoch_plan(_PIDS, 2, 3, 12, 2))


def test_epochs_cover_identities_evenly():
  # Over many epochs each identity appears as often as its group count says.
  p, k, epochs = 2, 3, 40
  pids = np.array(_PIDS)
  counts = collections.Counter()
  for epoch in range(epochs):
    plan = sampler.pk_epoch_plan(_PIDS, p, k, seed=0, epoch=epoch)
    counts.update(pids[plan[:, ::k].ravel()])
  assert counts == {5: 4 * epochs, 7: epochs, 9: 2 * epochs, 11: 2 * epochs,
                    3: epochs}


def test_too_few_identities_is_an_error():
  with pytest.raises(errors.SamplerError, match="at least P=3 distinct"):
    sampler.steps_per_epoch([1, 1, 2, 2], 3, 2)
  with pytest.raises(errors.SamplerError, match="non-empty"):
    sampler.pk_epoch_plan([], 2, 2, 0, 0)
  with pytest.raises(errors.SamplerError, match="K=0"):
    sampler.steps_per_epoch([1, 2], 1, 0)
