"""Times re-ID evaluation at Market-1501 size and at 10,000 x 100,000.

Usage:
  python scripts/benchmark_eval.py [--large] [--reference_queries 200]
  python scripts/benchmark_eval.py --rerank [--no_reference] [--no_large]

Problems are synthetic but not trivially separable: each identity has a
random unit centroid, each image is centroid + Gaussian noise (plus a small
per-camera shift), L2-normalised (noise 1.1 gives R1 ~0.9 / mAP ~0.6 like a
good Market model, 1.3 a hard problem whose positives rank deep); distance =
1 - dot, float32. Market size: 3,368 queries x 15,913 gallery (751
identities plus 2,798 distractors with pid 0), 6 cameras, max_rank 50. The
fast evaluator is compared for exact equality with the straightforward
per-query torchreid transcription (reference/torchreid_rank.py) on a query
subset, and timed against it.

`--rerank` times k-reciprocal re-ranking instead, on the same Market size
with 128-d features (noise 1.4, so that plain ranking gives R1 0.95 and mAP
0.69 like a good Market-1501 model; continuous random values, so no two
distances tie), cosine distance 1 - dot in float32. Three paths, each in a
fresh process so that its peak memory is its own:

  features   `re_ranking_features(qf, gf)`: the project's features path;
  distances  `re_ranking(q_g, q_q, g_g)`: the project's torchreid-style
             entry, from the three distance matrices (1.2 GB of input);
  reference  `reference/rerank_numpy.py` on the same matrices (the dense
             numpy algorithm torchreid and fast-reid ship).

Memory is the process's peak resident set size during the call (VmHWM,
reset once the inputs are built: Python, numpy, jax, inputs, output and
everything in between), beside the resident size just before the call.
The distance matrices are those the features path computes
(`rerank_neighbours.distance_matrices`: XLA's float32 GEMM rounds
differently from numpy's, which would move near-equal neighbours). The
reference's and the features path's results are compared: max abs
difference, identical rank order, and the same Market-protocol R1 / mAP.

10,000 x 100,000 (features path only; its 4 GB float32 result is never
built): `rerank_features` builds the sparse encoding, then every block of
rows is computed, once alone and once streamed through
`metrics.evaluate_rows` (Market protocol).
"""

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top
from pshrnet_jax import evaluation
from pshrnet_jax.evaluation import metrics
from pshrnet_jax.evaluation import rerank
from pshrnet_jax.evaluation import rerank_neighbours
from reference import rerank_numpy
from reference import torchreid_rank
# pylint: enable=g-import-not-at-top


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


# make_problem's arguments for the re-ranking runs.
RERANK_MARKET = dict(num_q=3368, num_g=15913, num_ids=751, num_cams=6,
                     num_distractors=2798, dim=128, noise=1.4)
RERANK_LARGE = dict(num_q=10000, num_g=100000, num_ids=5000, num_cams=8,
                    num_distractors=10000, dim=128, noise=1.4)


def _status_mib(field: str) -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
  """Restarts the peak RSS count here (Linux: clear_refs 5 resets VmHWM), so
  that building the inputs does not count as the call's peak."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def _rerank_worker(path: str, out_dir: str) -> None:
  """Runs one path in this (fresh) process; writes its figures and result."""
  figures = {}
  if path == "large":
    qf, gf, q_pids, g_pids, q_cams, g_cams = make_problem(**RERANK_LARGE)
    figures["rss_before_mib"] = _status_mib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    reranked = rerank.rerank_features(qf, gf)
    figures["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(qf), 512):
      reranked.rows(start, min(start + 512, len(qf)))
    figures["rows_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = metrics.evaluate_rows(reranked.rows, q_pids, g_pids, q_cams,
                                   g_cams)
    figures["rows_and_evaluation_s"] = time.perf_counter() - t0
    figures["rank1"], figures["mAP"] = result.rank(1), result.mAP
  else:
    qf, gf = make_problem(**RERANK_MARKET)[:2]
    if path != "features":
      # The distances the features path computes (same float32 GEMM).
      q_g, q_q, g_g = rerank_neighbours.distance_matrices(qf, gf)
    figures["rss_before_mib"] = _status_mib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    if path == "features":
      final = rerank.re_ranking_features(qf, gf)
    elif path == "distances":
      final = rerank.re_ranking(q_g, q_q, g_g)
    else:
      final = rerank_numpy.re_ranking(q_g, q_q, g_g)
    figures["seconds"] = time.perf_counter() - t0
    np.save(os.path.join(out_dir, f"{path}.npy"), final)
  figures["peak_rss_mib"] = _status_mib("VmHWM")
  with open(os.path.join(out_dir, f"{path}.json"), "w") as f:
    json.dump(figures, f)


def _run_in_fresh_process(path: str, out_dir: str) -> dict:
  process = multiprocessing.get_context("spawn").Process(
      target=_rerank_worker, args=(path, out_dir))
  process.start()
  process.join()
  if process.exitcode != 0:
    raise RuntimeError(f"the {path} run failed (exit code "
                       f"{process.exitcode})")
  with open(os.path.join(out_dir, f"{path}.json")) as f:
    return json.load(f)


def _compare_reranked(out_dir: str, a: str, b: str) -> None:
  """Prints how far two Market-size results are apart."""
  _, _, q_pids, g_pids, q_cams, g_cams = make_problem(**RERANK_MARKET)
  x = np.load(os.path.join(out_dir, f"{a}.npy"))
  y = np.load(os.path.join(out_dir, f"{b}.npy"))
  top = 50
  same_top = np.mean(np.all(
      np.argsort(x, axis=1, kind="stable")[:, :top] ==
      np.argsort(y, axis=1, kind="stable")[:, :top], axis=1))
  rx = metrics.evaluate(x, q_pids, g_pids, q_cams, g_cams)
  ry = metrics.evaluate(y, q_pids, g_pids, q_cams, g_cams)
  print(f"  {a} vs {b}: max abs difference {np.abs(x - y).max():.3g} "
        f"({np.mean(x == y) * 100:.2f}% of entries bit-identical, "
        f"{np.sum(np.abs(x - y) > 1e-5)} differ by more than 1e-5); same "
        f"top-{top} gallery order for {same_top * 100:.2f}% of queries; R1 "
        f"{rx.rank(1):.4f} / {ry.rank(1):.4f}, mAP {rx.mAP:.6f} / "
        f"{ry.mAP:.6f}")


def rerank_benchmark(reference: bool, large: bool) -> None:
  """Times re-ranking (see the module doc) and prints its figures."""
  with tempfile.TemporaryDirectory() as out_dir:
    paths = ["features", "distances"] + (["reference"] if reference else [])
    print(f"Re-ranking at Market-1501 size: {RERANK_MARKET['num_q']} x "
          f"{RERANK_MARKET['num_g']}, 128-d, k1=20 k2=6 lambda=0.3; memory = "
          "peak RSS of a fresh process (RSS before the call, inputs built)")
    figures = {}
    for path in paths:
      figures[path] = f = _run_in_fresh_process(path, out_dir)
      print(f"  {path:<10} {f['seconds']:7.2f} s   peak RSS "
            f"{f['peak_rss_mib']:6.0f} MiB (before: "
            f"{f['rss_before_mib']:.0f} MiB)")
    qf, gf, *ids = make_problem(**RERANK_MARKET)
    plain = metrics.evaluate_features(qf, gf, *ids)
    print(f"  plain ranking (no re-ranking): R1 {plain.rank(1):.4f}, mAP "
          f"{plain.mAP:.6f}")
    _compare_reranked(out_dir, "features", "distances")
    if reference:
      ref = figures["reference"]["seconds"]
      for path in ("features", "distances"):
        print(f"  {path}: {ref / figures[path]['seconds']:.1f}x faster than "
              f"the reference")
      _compare_reranked(out_dir, "distances", "reference")
      _compare_reranked(out_dir, "features", "reference")
    if large:
      f = _run_in_fresh_process("large", out_dir)
      print(f"Re-ranking at {RERANK_LARGE['num_q']:,} x "
            f"{RERANK_LARGE['num_g']:,} from 128-d features (rerank_features,"
            " rows in blocks): build "
            f"{f['build_s']:.1f} s, all rows {f['rows_s']:.1f} s, rows + "
            f"Market-protocol evaluation {f['rows_and_evaluation_s']:.1f} s;"
            f" peak RSS {f['peak_rss_mib']:.0f} MiB (before: "
            f"{f['rss_before_mib']:.0f} MiB); R1 {f['rank1']:.4f} mAP "
            f"{f['mAP']:.4f}")


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
    rerank_benchmark(reference=not args.no_reference,
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
