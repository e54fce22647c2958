"""Times re-ID evaluation at Market-1501 size and at 10,000 x 100,000.

Usage:
  python scripts/benchmark_eval.py [--large] [--reference_queries 200]
  python scripts/benchmark_eval.py --rerank [--no_reference] [--no_large]

`--rerank` times k-reciprocal re-ranking instead (rerank_benchmark.py).

Problems are synthetic but not trivially separable: each identity has a
random unit centroid, each image is centroid + Gaussian noise (plus a small
per-camera shift), L2-normalised (noise 1.1 gives R1 ~0.9 / mAP ~0.6 like a
good Market model, 1.3 a hard problem whose positives rank deep); distance = 1 - dot, float32. Market size:
3,368 queries x 15,913 gallery (751 identities plus 2,798 distractors with
pid 0), 6 cameras, max_rank 50. The fast evaluator is compared for exact
equality with the straightforward per-query torchreid transcription
(reference/torchreid_rank.py) on a query subset, and timed against it.
"""

import argparse
import os
import platform
import resource
import sys
import time
import tracemalloc

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from pshrnet_jax import evaluation  # pylint: disable=g-import-not-at-top
from reference import torchreid_rank  # pylint: disable=g-import-not-at-top


def make_problem(num_q, num_g, num_ids, num_cams, num_distractors, *, dim=64,
                 noise=1.3, seed=0):
  """Features, identities and cameras of a synthetic re-ID problem."""
  rng = np.random.default_rng(seed)
  centroids = rng.standard_normal((num_ids + 1, dim)).astype(np.float32)
  cam_shift = 0.3 * rng.standard_normal((num_cams, dim)).astype(np.float32)
  num_real = num_g - num_distractors
  g_pids = np.concatenate([
      np.arange(1, num_ids + 1),
      rng.integers(1, num_ids + 1, num_real - num_ids),
      np.zeros(num_distractors, dtype=np.int64)])
  q_pids = rng.integers(1, num_ids + 1, num_q)
  q_cams = rng.integers(0, num_cams, num_q)
  g_cams = rng.integers(0, num_cams, num_g)

  def features(pids, cams):
    f = centroids[pids] + cam_shift[cams] + noise * rng.standard_normal(
        (len(pids), dim)).astype(np.float32)
    f[pids == 0] = rng.standard_normal(((pids == 0).sum(), dim))
    return f / np.linalg.norm(f, axis=1, keepdims=True)

  return (features(q_pids, q_cams), features(g_pids, g_cams), q_pids, g_pids,
          q_cams, g_cams)


def timed(fn, *args, **kwargs):
  """(result, seconds) of one call."""
  t0 = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - t0


def traced_peak(fn, *args, **kwargs):
  """Peak bytes numpy and Python allocate during one call (tracemalloc).

  A separate run: tracing slows Python-level loops several-fold.
  """
  tracemalloc.start()
  fn(*args, **kwargs)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return peak


def market(reference_queries, noise):
  """Market-1501-sized evaluate_rank: time, memory, agreement."""
  qf, gf, q_pids, g_pids, q_cams, g_cams = make_problem(
      3368, 15913, 751, 6, 2798, noise=noise)
  distmat = 1.0 - qf @ gf.T
  args = (q_pids, g_pids, q_cams, g_cams)
  evaluation.evaluate_rank(distmat[:64], q_pids[:64], g_pids, q_cams[:64],
                           g_cams)  # Warm-up.
  times = []
  for _ in range(3):
    (cmc, m_ap), seconds = timed(evaluation.evaluate_rank, distmat, *args)
    times.append(seconds)
  peak = traced_peak(evaluation.evaluate_rank, distmat, *args)
  print(f"Market-1501 size: distmat {distmat.shape} {distmat.dtype}, "
        f"max_rank 50, noise {noise}")
  print(f"  evaluate_rank: best {min(times):.3f} s, runs "
        f"{', '.join(f'{t:.3f}' for t in times)} s; traced peak "
        f"{peak / 2**20:.0f} MiB beyond the distmat "
        f"({distmat.nbytes / 2**20:.0f} MiB)")
  print(f"  R1 {cmc[0]:.4f} R5 {cmc[4]:.4f} R10 {cmc[9]:.4f} mAP {m_ap:.4f}")
  n = reference_queries
  sub = (distmat[:n], q_pids[:n], g_pids, q_cams[:n], g_cams)
  (ref_cmc, ref_map, _, _), ref_s = timed(torchreid_rank.eval_market1501,
                                          *sub, 50)
  (fast_cmc, fast_map), fast_s = timed(evaluation.evaluate_rank, *sub)
  print(f"  reference (torchreid Python transcription) on the first {n} "
        f"queries: {ref_s:.2f} s (~{ref_s * 3368 / n:.0f} s for all) vs fast "
        f"{fast_s:.3f} s")
  print(f"  CMC identical: {np.array_equal(ref_cmc, fast_cmc)}; mAP identical:"
        f" {ref_map == fast_map} ({ref_map!r} vs {fast_map!r})")
  np.random.seed(0)
  ref_cuhk = torchreid_rank.eval_cuhk03(*sub, 50)
  np.random.seed(0)
  (c_cmc, c_map), c_s = timed(evaluation.evaluate_rank, *sub,
                              use_metric_cuhk03=True)
  print(f"  use_metric_cuhk03 on the same {n} queries: {c_s:.2f} s; CMC "
        f"identical: {np.array_equal(ref_cuhk[0], c_cmc)}; mAP identical: "
        f"{ref_cuhk[1] == c_map}")


def large():
  """10,000 x 100,000 from features, chunked: time and peak memory."""
  qf, gf, q_pids, g_pids, q_cams, g_cams = make_problem(
      10000, 100000, 5000, 8, 10000)
  args = (qf, gf, q_pids, g_pids, q_cams, g_cams)
  res, seconds = timed(evaluation.evaluate_features, *args)
  peak = traced_peak(evaluation.evaluate_features, *args)
  full = 4 * 10000 * 100000
  print(f"10,000 x 100,000 from 64-d features (evaluate_features, cosine, "
        f"query chunks of {evaluation.rank_engine.default_chunk_size(100000)}"
        f"): {seconds:.2f} s; traced peak {peak / 2**20:.0f} MiB (a full "
        f"float32 distmat would be {full / 2**30:.1f} GiB)")
  print(f"  R1 {res.rank(1):.4f} mAP {res.mAP:.4f} mINP {res.mINP:.4f} valid "
        f"{res.num_valid_queries}/{res.num_queries}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--large", action="store_true",
                      help="also run 10,000 x 100,000")
  parser.add_argument("--reference_queries", type=int, default=200)
  parser.add_argument("--noise", type=float, nargs="+", default=[1.1, 1.3],
                      help="feature noise levels (higher: harder problem)")
  parser.add_argument("--rerank", action="store_true",
                      help="time k-reciprocal re-ranking at Market-1501 size "
                      "(with the reference) and at 10,000 x 100,000")
  parser.add_argument("--no_reference", action="store_true",
                      help="--rerank without the dense reference (~9 GB)")
  parser.add_argument("--no_large", action="store_true",
                      help="--rerank without the 10,000 x 100,000 run")
  args = parser.parse_args()
  print(f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPU cores, {platform.machine()}")
  if args.rerank:
    import rerank_benchmark  # pylint: disable=g-import-not-at-top
    rerank_benchmark.run(reference=not args.no_reference,
                         large=not args.no_large)
    return
  for noise in args.noise:
    market(args.reference_queries, noise)
  if args.large:
    large()
  print(f"process max RSS: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
  main()
