"""Evaluation of a trained workdir on its benchmark (SPEC 4).

LR queries and the HR gallery go through the student (the headline) and the
phase-1 teacher (HR-only configs: the teacher on HR queries); results.json,
results.md, cmc.png and ranked_list.png go into the workdir. SR quality is
measured only on queries with a real HR original (`sr_quality_scope` says
over which); `eval.rerank` adds "+RR" figures on re-ranked distances; data
without camera ids gets one camera id per image (`metrics.image_camids`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging

from data_pipelines import pipeline
from data_pipelines.pipeline import transforms
from data_pipelines import records
from data_pipelines.records import Benchmark
from pshrnet_jax import console
from pshrnet_jax import convert
from pshrnet_jax import workdir_layout
from pshrnet_jax.errors import MissingTeacherError
from pshrnet_jax.evaluation import baselines
from pshrnet_jax.evaluation import features
from pshrnet_jax.evaluation import metrics
from pshrnet_jax.evaluation import plots
from pshrnet_jax.evaluation import reports
from pshrnet_jax.evaluation import rerank
from pshrnet_jax.evaluation import sr_quality
from pshrnet_jax.models import factory
from pshrnet_jax.models.inputs import denormalize_images


def _models_to_evaluate(config, workdir: str) -> dict[str, tuple[str, Any]]:
  """label -> (variables directory, model builder), the headline first."""
  out = {}
  student = workdir_layout.student_dir(workdir)
  if not config.hr_only and os.path.isdir(student):
    out[workdir_layout.STUDENT] = (student, factory.build_student)
  teacher = workdir_layout.teacher_dir(config, workdir)
  if os.path.isdir(teacher):
    out[workdir_layout.TEACHER] = (teacher, factory.build_teacher)
  if not out:
    raise MissingTeacherError(
        f"Nothing to evaluate in {workdir}: neither phase2/student nor "
        f"{teacher} exists. Train first (--config.mode=all).")
  return out


class _SRCollector:
  """Per batch: SR quality against HR, and the pictured SR outputs kept (not
  all: 393 KB each at 256x128)."""

  def __init__(self, keep: np.ndarray, scored: np.ndarray):
    self._keep = set(int(i) for i in keep)
    # Per query: whether its SR output is scored (it has an HR original).
    self._scored = scored
    self.kept: dict[int, np.ndarray] = {}
    self._qualities: list[sr_quality.SRQuality] = []

  def __call__(self, rows: Mapping[str, np.ndarray], sr: np.ndarray) -> None:
    for row, index in enumerate(rows["index"]):
      if int(index) in self._keep:
        self.kept[int(index)] = denormalize_images(sr[row])
    scored = self._scored[np.asarray(rows["index"], int)]
    if scored.any():
      self._qualities.append(sr_quality.sr_quality(sr[scored],
                                                   rows["hr"][scored]))

  def quality(self) -> sr_quality.SRQuality | None:
    return sr_quality.mean_quality(self._qualities)

  def images(self, picks: np.ndarray) -> list[np.ndarray] | None:
    return [self.kept[int(i)] for i in picks] if self.kept else None


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str,
                     benchmark: Benchmark, sources: Mapping[str, Any], *,
                     ready: Callable[[], None] | None = None
                     ) -> dict[str, Any]:
  """Evaluates the workdir's trained models and writes the reports.

  Args:
    config: the run config.
    workdir: the trained workdir.
    benchmark: its benchmark (query and gallery are evaluated).
    sources: random-access image sources per split (may be empty).
    ready: called once the models to evaluate were found, before any
      report is written.

  Returns:
    The content of results.json.
  """
  d, e = config.data, config.eval
  num_classes = len({r.pid for r in benchmark.train})
  image_size = tuple(d.image_size)
  use_lr = not config.hr_only
  query, gallery = benchmark.query, benchmark.gallery
  q_pids = np.array([r.pid for r in query])
  q_cams = np.array([r.camid for r in query])
  g_pids = np.array([r.pid for r in gallery])
  g_cams = np.array([r.camid for r in gallery])
  q_factors = np.array([r.lr_factor for r in query]) if use_lr else None
  q_has_hr = np.array([r.has_hr_original for r in query], bool)
  if benchmark.gallery_exclusion == records.QUERY_IMAGE_ONLY:
    q_cams, g_cams = metrics.image_camids([r.hr_path for r in query],
                                          [r.hr_path for r in gallery])
  trials, draws = gallery_draws(benchmark.protocol, g_pids, e.trials)
  ids = (q_pids, g_pids, q_cams, g_cams)
  rank_args = dict(max_rank=e.max_rank, protocol=benchmark.protocol,
                   ap_convention=e.ap_convention, trials=trials,
                   seed=config.seed)

  def batches(records, split, lr, hr, title):
    loaded = pipeline.make_eval_batches(
        records, image_size=image_size, batch_size=e.batch_size, use_lr=lr,
        include_hr=hr, lr_interpolation=factory.lr_interpolation(config),
        source=sources.get(split))
    return _with_progress(loaded, title, len(records), e.batch_size)

  # The queries pictured in ranked_list.png, spread over the query set.
  picks = np.unique(np.linspace(0, len(query) - 1, min(
      e.ranked_list_queries, len(query))).astype(int))
  results, headline, reranked = {}, None, {}
  to_evaluate = {}
  for label, (directory, build) in _models_to_evaluate(config,
                                                       workdir).items():
    # Weights that do not fit the configured model (another width, the
    # released VDSR-CA layout) fail here, before anything is written.
    model = build(config.model, num_classes)
    variables = convert.restore_variables(directory)
    factory.check_fits(variables, factory.abstract_variables(
        model, (1, *image_size, 3)), f"The {label} {directory}")
    to_evaluate[label] = (directory, model, variables)
  if ready is not None:
    ready()
  for label, (directory, model, variables) in to_evaluate.items():
    variables = jax.device_put(variables)
    is_student = (label == workdir_layout.STUDENT
                  and factory.sr_output_scored(config.model))
    with_quality = is_student and e.sr_quality and q_has_hr.any()
    logging.info("Evaluating the %s (%s) on %d queries x %d gallery images.",
                 label, directory, len(query), len(gallery))
    collector = _SRCollector(picks if is_student else np.zeros(0, int),
                             q_has_hr if with_quality else
                             np.zeros(len(query), bool))
    qf = features.extract_features(
        model.apply, variables,
        batches(query, "query", use_lr, with_quality, f"{label} query"),
        batch_size=e.batch_size, sr_callback=collector)
    gf = features.extract_features(
        model.apply, variables,
        batches(gallery, "gallery", False, False, f"{label} gallery"),
        batch_size=e.batch_size)
    results[label] = metrics.evaluate_features(
        qf, gf, *ids, q_lr_factors=q_factors, **rank_args)
    if e.rerank:
      logging.info("Re-ranking the %s's distances (k-reciprocal, k1=%d, "
                   "k2=%d, lambda=%g).", label, e.rerank_k1, e.rerank_k2,
                   e.rerank_lambda)
      reranked[label] = metrics.evaluate_rows(
          rerank.rerank_features(qf, gf, e.rerank_k1, e.rerank_k2,
                                 e.rerank_lambda, metric="cosine").rows,
          *ids, q_lr_factors=q_factors, **rank_args)
    if headline is None:
      headline = (qf, gf, collector.images(picks), collector.quality())

  qf, gf, sr_images, quality = headline
  if jax.process_index() != 0:  # Every process computed the same numbers.
    return reports.results_dict(results[next(iter(results))],
                                dataset=benchmark.name, sr=quality)
  baseline_results = {}
  if e.baselines:
    q_base = _baseline_features(batches(query, "query", use_lr, False,
                                        "baselines query"))
    g_base = _baseline_features(batches(gallery, "gallery", False, False,
                                        "baselines gallery"))
    baseline_results = {
        name: metrics.evaluate_features(q_base[name], g_base[name], *ids,
                                        **rank_args)
        for name in baselines.BASELINES}
  extra = {"chance_rank1": round(100.0 / len(set(q_pids.tolist())), 2),
           "gallery_exclusion": benchmark.gallery_exclusion,
           "split_index": d.split_index, "gallery_draws": draws}
  if (workdir_layout.STUDENT in results
      and factory.sr_output_scored(config.model) and e.sr_quality):
    extra["sr_quality_scope"] = _sr_quality_scope(q_has_hr)
  summary, markdown = reports.write_results(
      workdir, results, dataset=benchmark.name, sr=quality, extra=extra,
      reranked=reranked, rerank={
          "k1": e.rerank_k1, "k2": e.rerank_k2, "lambda": e.rerank_lambda,
          "distance": "1 - dot"}, baselines=baseline_results)
  curves = {**results, **{f"{k} +RR": v for k, v in reranked.items()}}
  plots.plot_cmc(os.path.join(workdir, workdir_layout.CMC_PNG), curves,
                 max_rank=min(e.max_rank, len(gallery)))
  _ranked_list(workdir, query, gallery, qf, gf, sr_images, picks, ids)
  if sr_images:
    _sr_grid_to_tensorboard(workdir, [query[i] for i in picks], sr_images,
                            image_size, d.lr_interpolation)
  console.say(markdown)
  console.say(
      f"Results in {workdir}: {workdir_layout.RESULTS_JSON}, "
      f"{workdir_layout.RESULTS_MD}, {workdir_layout.CMC_PNG}, "
      f"{workdir_layout.RANKED_LIST_PNG}; TensorBoard: tensorboard "
      f"--logdir {workdir_layout.tensorboard_dir(workdir)}")
  return summary


def _sr_quality_scope(q_has_hr: np.ndarray) -> str:
  """What results.json's SR quality covers, in words."""
  with_hr, total = int(q_has_hr.sum()), len(q_has_hr)
  if not with_hr:
    return (f"not reported: none of the {total} queries has an HR original "
            "(genuinely low-resolution images)")
  if with_hr < total:
    return (f"the {with_hr} of {total} queries with an HR original; the "
            f"other {total - with_hr} are genuinely low-resolution")
  return f"all {total} queries (each has an HR original)"


def gallery_draws(protocol: str, g_pids: np.ndarray,
                  trials: int) -> tuple[int, dict[str, Any]]:
  """How many single-shot gallery draws a split gets, and how to say so.

  `eval.trials` re-draws the one gallery image per identity within a split,
  one draw where each identity has one gallery image. The literature's 10
  trials (separately trained splits) are `scripts/reproduce.py --splits=10`.
  """
  if protocol != "single_shot":
    return trials, {"draws": None, "note": "multi-shot: the whole gallery"}
  splits = "; the mean over splits is scripts/reproduce.py --splits=10"
  if np.all(np.unique(g_pids, return_counts=True)[1] == 1):
    return 1, {"draws": 1, "note": "one gallery image per identity: "
               "nothing to re-draw" + splits}
  return trials, {"draws": trials, "note": f"{trials} re-draws of one "
                  "gallery image per identity within this split "
                  "(eval.trials)" + splits}


def _baseline_features(batches) -> dict[str, np.ndarray]:
  """Every baseline's features of the valid rows of `batches`."""
  parts = {name: [] for name in baselines.BASELINES}
  for batch in batches:
    images = np.asarray(batch["image"])[np.asarray(batch["valid"], bool)]
    for name in parts:
      parts[name].append(baselines.baseline_features(name, images))
  return {name: np.concatenate(p) for name, p in parts.items()}


def _with_progress(batches, title: str, num_images: int, batch_size: int):
  """Yields `batches`, showing how many images went through."""
  bar = console.ProgressBar(
      title, num_images, unit="images", every=max(1, num_images // 10),
      stream=None if jax.process_index() == 0 else open(os.devnull, "w"))
  done = 0
  for batch in batches:
    yield batch
    done = min(num_images, done + batch_size)
    bar.update(done)
  bar.close()


def _sr_grid_to_tensorboard(workdir, records, sr_images, image_size,
                            interpolation) -> None:
  """One image: a row per pictured query, LR input | SR output | HR."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  rows = []
  for record, sr in zip(records, sr_images):
    lr = transforms.load_resized(record.input_path, image_size, interpolation)
    hr = transforms.load_resized(record.hr_path, image_size)
    sr = np.round(np.clip(sr, 0.0, 1.0) * 255).astype(np.uint8)
    rows.append(np.concatenate([lr, sr, hr], axis=1))
  grid = np.concatenate(rows, axis=0)
  with SummaryWriter(workdir_layout.tensorboard_dir(workdir, "eval")) as writer:
    writer.add_image("sr/lr_sr_hr", grid, 0, dataformats="HWC")


def _ranked_list(workdir, query, gallery, qf, gf, sr_images, picks, ids):
  """ranked_list.png: a few LR queries, their SR output, top-10 matches."""
  if len(picks) == 0:
    return
  q_pids, g_pids, q_cams, g_cams = ids
  indices, correct = plots.ranked_matches(
      1.0 - qf[picks] @ gf.T, q_pids[picks], g_pids, q_cams[picks], g_cams,
      top_k=min(10, len(gallery)))
  plots.save_ranked_list(
      os.path.join(workdir, workdir_layout.RANKED_LIST_PNG),
      [query[i].input_path for i in picks],
      lambda i: gallery[i].hr_path, indices, correct, sr_images=sr_images)
