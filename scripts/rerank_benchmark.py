"""k-reciprocal re-ranking timed: `python scripts/benchmark_eval.py --rerank`.

Market-1501 size: 3,368 queries x 15,913 gallery images, 128-d features from
benchmark_eval.make_problem (751 identities around random centroids, 2,798
distractors, L2-normalised; noise 1.4, so that plain ranking gives R1 0.95
and mAP 0.69 like a good Market-1501 model; continuous random values, so no
two distances tie), cosine distance 1 - dot in float32. Three paths, each in a
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
differently from numpy's, which would move near-equal neighbours). The reference's and the features
path's results are compared: max abs difference, identical rank order, and
the same Market-protocol R1 / mAP.

10,000 x 100,000 (features path only; its 4 GB float32 result is never
built): `rerank_features` builds the sparse encoding, then every block of
rows is computed, once alone and once streamed through
`metrics.evaluate_rows` (Market protocol).
"""

import json
import multiprocessing
import os
import tempfile
import time

import numpy as np

MARKET = dict(num_q=3368, num_g=15913, num_ids=751, num_cams=6,
              num_distractors=2798)
LARGE = dict(num_q=10000, num_g=100000, num_ids=5000, num_cams=8,
             num_distractors=10000)
NOISE = 1.4


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


def _problem(size):
  from benchmark_eval import make_problem  # pylint: disable=g-import-not-at-top
  return make_problem(size["num_q"], size["num_g"], size["num_ids"],
                      size["num_cams"], size["num_distractors"], dim=128,
                      noise=NOISE)


def _worker(path: str, out_dir: str) -> None:
  """Runs one path in this (fresh) process; writes its figures and result."""
  from pshrnet_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.evaluation import rerank  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.evaluation import rerank_neighbours  # pylint: disable=g-import-not-at-top
  from reference import rerank_numpy  # pylint: disable=g-import-not-at-top
  figures = {}
  if path == "large":
    qf, gf, q_pids, g_pids, q_cams, g_cams = _problem(LARGE)
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
    qf, gf = _problem(MARKET)[:2]
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
      target=_worker, args=(path, out_dir))
  process.start()
  process.join()
  if process.exitcode != 0:
    raise RuntimeError(f"the {path} run failed (exit code "
                       f"{process.exitcode})")
  with open(os.path.join(out_dir, f"{path}.json")) as f:
    return json.load(f)


def _compare(out_dir: str, a: str, b: str) -> None:
  """Prints how far two Market-size results are apart."""
  from pshrnet_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
  _, _, q_pids, g_pids, q_cams, g_cams = _problem(MARKET)
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


def run(reference: bool = True, large: bool = True) -> None:
  """Runs the re-ranking benchmark and prints its figures."""
  with tempfile.TemporaryDirectory() as out_dir:
    paths = ["features", "distances"] + (["reference"] if reference else [])
    print(f"Re-ranking at Market-1501 size: {MARKET['num_q']} x "
          f"{MARKET['num_g']}, 128-d, k1=20 k2=6 lambda=0.3; memory = peak "
          f"RSS of a fresh process (RSS before the call, inputs built)")
    figures = {}
    for path in paths:
      figures[path] = f = _run_in_fresh_process(path, out_dir)
      print(f"  {path:<10} {f['seconds']:7.2f} s   peak RSS "
            f"{f['peak_rss_mib']:6.0f} MiB (before: "
            f"{f['rss_before_mib']:.0f} MiB)")
    from pshrnet_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
    qf, gf, *ids = _problem(MARKET)
    plain = metrics.evaluate_features(qf, gf, *ids)
    print(f"  plain ranking (no re-ranking): R1 {plain.rank(1):.4f}, mAP "
          f"{plain.mAP:.6f}")
    _compare(out_dir, "features", "distances")
    if reference:
      ref = figures["reference"]["seconds"]
      for path in ("features", "distances"):
        print(f"  {path}: {ref / figures[path]['seconds']:.1f}x faster than "
              f"the reference")
      _compare(out_dir, "distances", "reference")
      _compare(out_dir, "features", "reference")
    if large:
      f = _run_in_fresh_process("large", out_dir)
      print(f"Re-ranking at {LARGE['num_q']:,} x {LARGE['num_g']:,} from "
            f"128-d features (rerank_features, rows in blocks): build "
            f"{f['build_s']:.1f} s, all rows {f['rows_s']:.1f} s, rows + "
            f"Market-protocol evaluation {f['rows_and_evaluation_s']:.1f} s;"
            f" peak RSS {f['peak_rss_mib']:.0f} MiB (before: "
            f"{f['rss_before_mib']:.0f} MiB); R1 {f['rank1']:.4f} mAP "
            f"{f['mAP']:.4f}")
