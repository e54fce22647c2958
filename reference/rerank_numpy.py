"""k-reciprocal re-ranking as torchreid and fast-reid ship it: the dense original.

Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017 (zhunzhong07/person-re-ranking; the numpy port in
torchreid `torchreid/utils/rerank.py` and fast-reid
`fastreid/evaluation/rerank.py`). Written here step by step from that
algorithm, keeping every numerical choice of the shipped code: the N x N
matrix of squared distances (N = queries + gallery) cast to float32, each
column divided by its maximum and the matrix transposed, `np.argsort` with
numpy's default (quicksort, not stable) kind, the k1/2 rounded by
`np.around` (half to even), the 2/3 overlap test in float64, float32
weights, the query expansion as a float32 mean over the k2 nearest rows,
and the Jaccard overlap accumulated in float32 in column order.

It holds several N x N matrices and loops over rows in Python: tests and
`scripts/benchmark_eval.py --rerank` use it as the reference that
`pshrnet_jax.evaluation.rerank` must equal; the library never imports it.
"""

import numpy as np


def _k_reciprocal(rank: np.ndarray, node: int, k: int) -> np.ndarray:
  """Members of node's k+1 nearest whose own k+1 nearest contain node."""
  forward = rank[node, :k + 1]
  backward = rank[forward, :k + 1]
  return forward[np.where(backward == node)[0]]


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
  """Re-ranked (num_query, num_gallery) distances, the reference's way.

  Args:
    q_g_dist: (num_query, num_gallery) distances.
    q_q_dist: (num_query, num_query) distances.
    g_g_dist: (num_gallery, num_gallery) distances.
    k1: size of the k-reciprocal neighbourhood.
    k2: size of the query expansion (1: none).
    lambda_value: weight of the original distance in the result.

  Returns:
    (num_query, num_gallery) float32.
  """
  num_query = q_g_dist.shape[0]
  full = np.concatenate([
      np.concatenate([q_q_dist, q_g_dist], axis=1),
      np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
  full = np.power(full, 2).astype(np.float32)
  # Column j divided by its maximum, then transposed: row i of `dist` is the
  # i-th column of the squared matrix, scaled to [0, 1].
  dist = np.transpose(1.0 * full / np.max(full, axis=0))
  del full
  num_all = dist.shape[0]
  rank = np.argsort(dist).astype(np.int32)
  half = int(np.around(k1 / 2.0))

  weights = np.zeros_like(dist, dtype=np.float32)
  for i in range(num_all):
    reciprocal = _k_reciprocal(rank, i, k1)
    expansion = reciprocal
    for candidate in reciprocal:
      candidate_set = _k_reciprocal(rank, candidate, half)
      overlap = len(np.intersect1d(candidate_set, reciprocal))
      if overlap > 2.0 / 3 * len(candidate_set):
        expansion = np.append(expansion, candidate_set)
    expansion = np.unique(expansion)
    w = np.exp(-dist[i, expansion])
    weights[i, expansion] = 1.0 * w / np.sum(w)

  dist = dist[:num_query]
  if k2 != 1:
    expanded = np.zeros_like(weights, dtype=np.float32)
    for i in range(num_all):
      expanded[i] = np.mean(weights[rank[i, :k2]], axis=0)
    weights = expanded
  del rank

  # Rows (images) in which each column (image) has a non-zero weight.
  holders = [np.where(weights[:, j] != 0)[0] for j in range(num_all)]
  jaccard = np.zeros_like(dist, dtype=np.float32)
  for i in range(num_query):
    shared = np.zeros((1, num_all), dtype=np.float32)
    columns = np.where(weights[i] != 0)[0]
    for j in columns:
      rows = holders[j]
      shared[0, rows] = shared[0, rows] + np.minimum(weights[i, j],
                                                     weights[rows, j])
    jaccard[i] = 1 - shared / (2.0 - shared)

  final = jaccard * (1 - lambda_value) + dist * lambda_value
  return final[:num_query, num_query:]
