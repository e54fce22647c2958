"""Straightforward per-query re-ID metrics, the references the fast code must match.

`eval_market1501` and `eval_cuhk03` are transcribed from torchreid's published
Python evaluator (torchreid/metrics/rank.py, `evaluate_py`), with one change:
argsort is stable, so tied distances have a defined order. `eval_released` is
the per-query loop of the released PS-HRNet code (the Person_reID_baseline
`compute_mAP`: trapezoid AP, junk removed, CMC and mAP divided by all
queries). `inp` is fast-reid's per-query mINP term.
"""

from collections import defaultdict

import numpy as np


def eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """torchreid eval_market1501; returns (cmc, mAP, mINP, num_valid)."""
  num_q, num_g = distmat.shape
  if num_g < max_rank:
    max_rank = num_g
  indices = np.argsort(distmat, axis=1, kind="stable")
  matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
  all_cmc, all_ap, all_inp = [], [], []
  num_valid_q = 0.
  for q_idx in range(num_q):
    q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
    order = indices[q_idx]
    remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
    keep = np.invert(remove)
    raw_cmc = matches[q_idx][keep]
    if not np.any(raw_cmc):
      continue
    cmc = raw_cmc.cumsum()
    all_inp.append(cmc[np.max(np.where(raw_cmc == 1))] /
                   (np.max(np.where(raw_cmc == 1)) + 1.0))
    cmc[cmc > 1] = 1
    all_cmc.append(cmc[:max_rank])
    num_valid_q += 1.
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    tmp_cmc = [x / (i + 1.) for i, x in enumerate(tmp_cmc)]
    tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
    all_ap.append(tmp_cmc.sum() / num_rel)
  assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
  all_cmc = np.asarray(all_cmc).astype(np.float32)
  all_cmc = all_cmc.sum(0) / num_valid_q
  return all_cmc, np.mean(all_ap), np.mean(all_inp), int(num_valid_q)


def eval_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """torchreid eval_cuhk03 (np.random.choice per identity, 10 repeats)."""
  num_repeats = 10
  num_q, num_g = distmat.shape
  if num_g < max_rank:
    max_rank = num_g
  indices = np.argsort(distmat, axis=1, kind="stable")
  matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
  all_cmc, all_ap = [], []
  num_valid_q = 0.
  for q_idx in range(num_q):
    q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
    order = indices[q_idx]
    remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
    keep = np.invert(remove)
    raw_cmc = matches[q_idx][keep]
    if not np.any(raw_cmc):
      continue
    kept_g_pids = g_pids[order][keep]
    g_pids_dict = defaultdict(list)
    for idx, pid in enumerate(kept_g_pids):
      g_pids_dict[pid].append(idx)
    cmc = 0.
    for _ in range(num_repeats):
      mask = np.zeros(len(raw_cmc), dtype=bool)
      for _, idxs in g_pids_dict.items():
        rnd_idx = np.random.choice(idxs)
        mask[rnd_idx] = True
      masked_raw_cmc = raw_cmc[mask]
      _cmc = masked_raw_cmc.cumsum()
      _cmc[_cmc > 1] = 1
      cmc += _cmc[:max_rank].astype(np.float32)
    cmc /= num_repeats
    all_cmc.append(cmc)
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    tmp_cmc = [x / (i + 1.) for i, x in enumerate(tmp_cmc)]
    tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
    all_ap.append(tmp_cmc.sum() / num_rel)
    num_valid_q += 1.
  assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
  all_cmc = np.asarray(all_cmc).astype(np.float32)
  all_cmc = all_cmc.sum(0) / num_valid_q
  return all_cmc, np.mean(all_ap)


def eval_released(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """Released PS-HRNet code: returns (cmc[:max_rank], mAP), over all queries."""
  num_q, num_g = distmat.shape
  total_cmc = np.zeros(num_g, dtype=np.int64)
  ap_sum = 0.0
  for q_idx in range(num_q):
    index = np.argsort(distmat[q_idx], kind="stable")
    query_index = np.argwhere(g_pids == q_pids[q_idx])
    camera_index = np.argwhere(g_camids == q_camids[q_idx])
    good_index = np.setdiff1d(query_index, camera_index, assume_unique=True)
    junk_index = np.append(np.intersect1d(query_index, camera_index),
                           np.argwhere(g_pids == -1))
    if good_index.size == 0:
      continue
    index = index[np.isin(index, junk_index, invert=True)]
    ngood = len(good_index)
    rows_good = np.argwhere(np.isin(index, good_index)).flatten()
    cmc = np.zeros(num_g, dtype=np.int64)
    cmc[rows_good[0]:] = 1
    ap = 0.0
    for i in range(ngood):
      d_recall = 1.0 / ngood
      precision = (i + 1) * 1.0 / (rows_good[i] + 1)
      old_precision = i * 1.0 / rows_good[i] if rows_good[i] != 0 else 1.0
      ap = ap + d_recall * (old_precision + precision) / 2
    total_cmc += cmc
    ap_sum += ap
  return (total_cmc[:min(max_rank, num_g)] / num_q).astype(np.float32), \
      ap_sum / num_q
