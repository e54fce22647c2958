"""results.json and results.md: percentages (rank-k, mAP, mINP) rounded to 2
decimals, always beside the protocol and AP convention that produced them."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Union

from pshrnet_jax import workdir_layout
from pshrnet_jax.evaluation.metrics import RankResult
from pshrnet_jax.evaluation import sr_quality
from pshrnet_jax.evaluation.sr_quality import SRQuality

RERANK_NOTE = ("+RR: k-reciprocal re-ranking (Zhong et al., CVPR 2017) of "
               "the same features; same protocol and AP convention")


def _pct(x) -> float:
  return round(float(x) * 100.0, 2)


def _ranks(values, suffix: str = "") -> dict:
  """rank1, rank5, rank10 (+ suffix) of a CMC in percent; None past its end."""
  return {f"rank{k}{suffix}": _pct(values[k - 1]) if len(values) >= k else None
          for k in (1, 5, 10)}


def _summary(result: RankResult) -> dict:
  """The headline numbers of one RankResult, in percent."""
  out = {**_ranks(result.cmc), "mAP": _pct(result.mAP),
         "mINP": _pct(result.mINP),
         "num_valid_queries": result.num_valid_queries,
         "num_queries": result.num_queries}
  if result.trials is not None:
    trials = result.trials
    out["single_shot"] = {
        "trials": int(trials.mAP.shape[0]), **_ranks(trials.cmc_std, "_std"),
        "mAP_std": _pct(trials.mAP_std),
        "per_trial_rank1": [_pct(c[0]) for c in trials.cmc],
        "per_trial_mAP": [_pct(m) for m in trials.mAP],
    }
  return out


def results_dict(result: RankResult, *, dataset: str = "",
                 sr: Optional[SRQuality] = None) -> dict:
  """The JSON-serialisable content of results.json for one evaluation."""
  out = {"dataset": dataset, "protocol": result.protocol,
         "ap_convention": result.ap_convention, **_summary(result),
         "cmc": [_pct(c) for c in result.cmc]}
  if result.per_factor:
    out["per_factor"] = {str(k): _summary(v)
                         for k, v in sorted(result.per_factor.items())}
  if sr is not None:
    out["sr"] = {"psnr_y": round(sr.psnr_y, 3), "ssim_y": round(sr.ssim_y, 4),
                 "psnr_rgb": round(sr.psnr_rgb, 3),
                 "ssim_rgb": round(sr.ssim_rgb, 4),
                 "num_images": sr.num_images,
                 "conventions": dict(sr_quality.CONVENTIONS)}
  return out


def results_markdown(result: RankResult, *, dataset: str = "",
                     sr: Optional[SRQuality] = None,
                     reranked: Optional[RankResult] = None) -> str:
  """A Markdown table of the results (percent; single shot: mean ± std),
  `reranked`'s rows following, labelled "+RR"."""

  def cell(value, spread):
    text = f"{value * 100:.2f}"
    return text if spread is None else f"{text} ± {spread * 100:.2f}"

  def row(label, r):
    s = r.trials.cmc_std if r.trials is not None else None
    ranks = [cell(r.cmc[k - 1], None if s is None else s[k - 1])
             if len(r.cmc) >= k else "-" for k in (1, 5, 10)]
    m_ap = cell(r.mAP, None if r.trials is None else r.trials.mAP_std)
    return (f"| {label} | {' | '.join(ranks)} | {m_ap} | {r.mINP * 100:.2f} "
            f"| {r.num_valid_queries}/{r.num_queries} |")

  lines = [
      f"# Results{': ' + dataset if dataset else ''}", "",
      f"Protocol: {result.protocol}; AP convention: {result.ap_convention}"
      + (f"; {result.trials.mAP.shape[0]} single-shot trials (mean ± std)"
         if result.trials is not None else ""), "",
      "| queries | Rank-1 | Rank-5 | Rank-10 | mAP | mINP | valid/all |",
      "|---|---|---|---|---|---|---|"]
  for suffix, res in (("", result), (" +RR", reranked)):
    if res is not None:
      lines += [row("all" + suffix, res)] + [
          row(f"LR x{f}{suffix}", r) for f, r in sorted(res.per_factor.items())]
  if sr is not None:
    lines += ["", "| SR vs HR | PSNR (dB) | SSIM | images |",
              "|---|---|---|---|",
              f"| Y (BT.601), Gaussian SSIM | {sr.psnr_y:.2f} | "
              f"{sr.ssim_y:.4f} | {sr.num_images} |",
              f"| RGB [0, 1], 7x7 uniform SSIM | {sr.psnr_rgb:.2f} | "
              f"{sr.ssim_rgb:.4f} | {sr.num_images} |"]
  return "\n".join(lines) + "\n"


def _baselines_markdown(baselines: Mapping[str, RankResult]) -> str:
  lines = ["Matchers that learn nothing, on the same queries "
           "(evaluation/baselines.py):", "",
           "| baseline | Rank-1 | Rank-5 | Rank-10 | mAP |", "|---|---|---|---|---|"]
  for name, r in baselines.items():
    ranks = [f"{r.cmc[k - 1] * 100:.2f}" if len(r.cmc) >= k else "-"
             for k in (1, 5, 10)]
    lines.append(f"| {name} | {' | '.join(ranks)} | {r.mAP * 100:.2f} |")
  return "\n".join(lines) + "\n"


def write_results(workdir: str,
                  results: Union[RankResult, Mapping[str, RankResult]], *,
                  dataset: str = "", sr: Optional[SRQuality] = None,
                  extra: Optional[Mapping[str, Any]] = None,
                  reranked: Optional[Mapping[str, RankResult]] = None,
                  rerank: Optional[Mapping[str, Any]] = None,
                  baselines: Optional[Mapping[str, RankResult]] = None
                  ) -> tuple[dict[str, Any], str]:
  """Writes results.json and results.md into `workdir` (created).

  Args:
    workdir: the folder to write into.
    results: one RankResult, or label -> RankResult, the headline model first.
    dataset: benchmark name, e.g. "mlr_market1501".
    sr: SR quality of the headline model, when measured.
    extra: more top-level JSON entries (e.g. the chance rank-1).
    reranked: label -> RankResult on re-ranked distances ("+RR"), for some
      or all labels.
    rerank: the re-ranking's parameters, recorded with `reranked`.
    baselines: name -> RankResult of `evaluation/baselines.py` matchers.

  Returns:
    (results.json's content, results.md's). The JSON holds the headline's
    numbers at the top level and, for several models, `model` (the headline
    label) and `models` (label -> numbers); a model's "+RR" numbers are
    under `reranked` in its entry (and at the top level for the headline).
  """
  if isinstance(results, RankResult):
    results = {"": results}
  reranked = dict(reranked or {})
  headline = next(iter(results))

  def entry(label, sr=None):
    out = results_dict(results[label], dataset=dataset, sr=sr)
    if label in reranked:
      out["reranked"] = results_dict(reranked[label], dataset=dataset)
    return out

  summary = entry(headline, sr)
  if len(results) > 1 or headline:
    summary["model"] = headline
    summary["models"] = {label: entry(label) for label in results}
  if reranked:
    summary["rerank"] = {**dict(rerank or {}), "note": RERANK_NOTE}
  summary.update(extra or {})
  markdown = "\n".join(
      results_markdown(r, dataset=f"{dataset} ({label})" if label else dataset,
                       sr=sr if label == headline else None,
                       reranked=reranked.get(label))
      for label, r in results.items())
  if reranked:
    params = ", ".join(f"{k}={v}" for k, v in (rerank or {}).items())
    markdown += f"\n{RERANK_NOTE}{' (' + params + ')' if params else ''}.\n"
  if baselines:
    summary["baselines"] = {name: _summary(r) for name, r in baselines.items()}
    markdown += "\n" + _baselines_markdown(baselines)
  os.makedirs(workdir, exist_ok=True)
  text = json.dumps(summary, indent=2)
  with open(os.path.join(workdir, workdir_layout.RESULTS_JSON), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, workdir_layout.RESULTS_MD), "w") as f:
    f.write(markdown)
  return json.loads(text), markdown
