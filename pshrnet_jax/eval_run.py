"""Evaluation of a trained workdir on its benchmark (SPEC 4).

Queries (LR on cross-resolution sets) and the HR gallery both go through the
evaluated model; features are flip-summed and L2-normalised; ranking uses
1 - dot. On cross-resolution sets both the student (phase 2) and the phase-1
teacher are evaluated on the same LR queries, so the gain from VDSR-CA and the
pseudo-siamese training shows beside the baseline. The student's numbers are
the headline; HR-only configs evaluate the teacher on HR queries.

Writes into the workdir: results.json (headline numbers at the top level, one
entry per evaluated model), results.md, cmc.png and ranked_list.png.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging

from data_pipelines import pipeline
from data_pipelines.records import Benchmark
from pshrnet_jax import convert
from pshrnet_jax import evaluation
from pshrnet_jax import features
from pshrnet_jax import reports
from pshrnet_jax import sr_quality
from pshrnet_jax import train

_RANKED_LIST_TOP_K = 10


def _models_to_evaluate(config, workdir: str) -> dict[str, str]:
  """label -> variables directory, the headline model first."""
  out = {}
  student = os.path.join(workdir, "phase2", "student")
  if not config.hr_only and os.path.isdir(student):
    out["student"] = student
  teacher = train.teacher_dir(config, workdir)
  if os.path.isdir(teacher):
    out["teacher"] = teacher
  if not out:
    raise train.MissingTeacherError(
        f"Nothing to evaluate in {workdir}: neither phase2/student nor "
        f"{teacher} exists. Train first (--config.mode=all).")
  return out


def _picked_queries(num_query: int, num_pictured: int) -> np.ndarray:
  """Queries shown in ranked_list.png, spread over the query set."""
  n = min(num_pictured, num_query)
  return np.unique(np.linspace(0, num_query - 1, n).astype(int))


def _extract(model, variables, batches, *, keep_sr: np.ndarray,
             with_sr_quality: bool):
  """Features of every valid row, SR quality, and SR images of `keep_sr`.

  The SR outputs are not kept for the whole query set (393 KB each at
  256x128): quality is accumulated batch by batch.
  """
  feature_fn = features.make_feature_fn(model.apply)
  feats, sr_keep, psnr_sum, ssim_sum, count = [], {}, 0.0, 0.0, 0
  for batch in batches:
    valid = np.asarray(batch["valid"])
    f, sr = feature_fn(variables, batch["image"])
    feats.append(np.asarray(f)[valid])
    for row in np.flatnonzero(np.isin(batch["index"], keep_sr) & valid):
      sr_keep[int(batch["index"][row])] = features.denormalize_images(
          np.asarray(sr[row]))
    if with_sr_quality:
      q = sr_quality.sr_quality(np.asarray(sr)[valid], batch["hr"][valid])
      psnr_sum += q.psnr * q.num_images
      ssim_sum += q.ssim * q.num_images
      count += q.num_images
  sr_images = [sr_keep[i] for i in keep_sr] if sr_keep else None
  quality = (sr_quality.SRQuality(psnr=psnr_sum / count, ssim=ssim_sum / count,
                                  num_images=count) if count else None)
  return np.concatenate(feats), sr_images, quality


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str,
                     benchmark: Benchmark,
                     sources: Mapping[str, Any]) -> dict[str, Any]:
  """Evaluates the workdir's trained models and writes the reports.

  Returns:
    The content of results.json.
  """
  d, e = config.data, config.eval
  num_classes = len({r.pid for r in benchmark.train})
  image_size = tuple(d.image_size)
  use_lr = not config.hr_only
  query = benchmark.query
  gallery = benchmark.gallery
  q_pids = np.array([r.pid for r in query])
  q_cams = np.array([r.camid for r in query])
  g_pids = np.array([r.pid for r in gallery])
  g_cams = np.array([r.camid for r in gallery])
  q_factors = np.array([r.lr_factor for r in query]) if use_lr else None

  def batches(records, split, lr, hr):
    return pipeline.make_eval_batches(
        records, image_size=image_size, batch_size=e.batch_size, use_lr=lr,
        include_hr=hr, lr_interpolation=d.lr_interpolation,
        source=sources.get(split))

  picks = _picked_queries(len(query), e.ranked_list_queries)
  results, sr_images, headline_sr = {}, None, None
  for label, directory in _models_to_evaluate(config, workdir).items():
    variables = jax.device_put(convert.restore_variables(directory))
    build = train.build_student if label == "student" else train.build_teacher
    model = build(config, num_classes)
    is_student = label == "student" and config.model.sr_module != "none"
    logging.info("Evaluating the %s (%s) on %d queries x %d gallery images.",
                 label, directory, len(query), len(gallery))
    qf, q_sr, quality = _extract(
        model, variables, batches(query, "query", use_lr, is_student and
                                  e.sr_quality),
        keep_sr=picks, with_sr_quality=is_student and e.sr_quality)
    gf, _, _ = _extract(model, variables,
                        batches(gallery, "gallery", False, False),
                        keep_sr=np.zeros(0, int), with_sr_quality=False)
    result = evaluation.evaluate_features(
        qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=e.max_rank,
        protocol=benchmark.protocol, ap_convention=e.ap_convention,
        trials=e.trials, seed=config.seed, q_lr_factors=q_factors)
    results[label] = result
    if sr_images is None:
      sr_images = q_sr if is_student else None
      headline_sr = quality
      headline_q, headline_g = qf, gf

  headline = next(iter(results))
  summary = reports.results_dict(results[headline], dataset=benchmark.name,
                                 sr=headline_sr)
  summary["model"] = headline
  summary["models"] = {label: reports.results_dict(r, dataset=benchmark.name)
                       for label, r in results.items()}
  summary["chance_rank1"] = round(100.0 / len(set(q_pids.tolist())), 2)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  markdown = "\n".join(
      reports.results_markdown(r, dataset=f"{benchmark.name} ({label})",
                               sr=headline_sr if label == headline else None)
      for label, r in results.items())
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown)
  reports.plot_cmc(os.path.join(workdir, "cmc.png"), results,
                   max_rank=min(e.max_rank, len(gallery)))
  _ranked_list(workdir, query, gallery, headline_q, headline_g, sr_images,
               picks)
  print(markdown)
  return summary


def _ranked_list(workdir, query, gallery, qf, gf, sr_images, picks):
  """ranked_list.png: a few LR queries, their SR output, top-10 matches."""
  if len(picks) == 0:
    return
  distances = 1.0 - qf[picks] @ gf.T
  indices, correct = reports.ranked_matches(
      distances, np.array([query[i].pid for i in picks]),
      np.array([r.pid for r in gallery]),
      np.array([query[i].camid for i in picks]),
      np.array([r.camid for r in gallery]),
      top_k=min(_RANKED_LIST_TOP_K, len(gallery)))
  reports.save_ranked_list(
      os.path.join(workdir, "ranked_list.png"),
      [query[i].input_path for i in picks],
      lambda i: gallery[i].hr_path, indices, correct, sr_images=sr_images)
