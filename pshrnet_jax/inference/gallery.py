"""Features of one's own photos, kept in a file, and searched.

A gallery is embedded once (`embed` + `save_features`, or `python -m
pshrnet_jax.extract`) and searched many times (`search`, or `python -m
pshrnet_jax.search`); files that cannot be read are listed and skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from data_pipelines import atomic
from data_pipelines.readers import checks
from pshrnet_jax import console
from pshrnet_jax.errors import ConfigError
from pshrnet_jax.errors import DatasetNotFoundError
from pshrnet_jax.errors import UnreadableImageError
from pshrnet_jax.evaluation import features as features_lib
from pshrnet_jax.evaluation import plots
from pshrnet_jax.evaluation import rerank as rerank_lib
from pshrnet_jax.inference.commands import REPORT_FILES
from pshrnet_jax.inference.loading import ModelInfo

# Market-1501 / DukeMTMC-reID names: identity, then camera (1-based).
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
FEATURES_FORMAT = "pshrnet_jax.features.v1"


@dataclasses.dataclass
class Embedded:
  """Features (N, D) of the N readable `paths`, the (path, reason) of each
  `failed` one, and with `keep_sr` the SR outputs (N, H, W, 3) in [0, 1]."""
  features: np.ndarray
  paths: list[str]
  failed: list[tuple[str, str]]
  sr: np.ndarray | None = None


def list_images(source: str | Sequence[str]) -> list[str]:
  """The given image files, and the image files of each given folder
  (recursively, sorted), in order.

  Raises:
    DatasetNotFoundError: a path that does not exist, or a folder without
      images.
  """
  found, missing = [], []
  for path in [source] if isinstance(source, str) else source:
    if os.path.isdir(path):
      found += _images_in(path)
    elif os.path.isfile(path):
      found.append(path)
    else:
      missing.append(path)
  if missing:
    raise DatasetNotFoundError(
        f"image file(s) or folder(s) not found: {checks.list_names(missing)}")
  return found


def _images_in(folder: str) -> list[str]:
  found = []
  for root, dirs, names in os.walk(folder):
    dirs.sort()
    found += [os.path.join(root, n) for n in sorted(names)
              if n.lower().endswith(checks.IMAGE_EXTENSIONS)]
  if not found:
    raise DatasetNotFoundError(
        f"{folder} holds no images ({', '.join(checks.IMAGE_EXTENSIONS)})")
  return found


def identity_of(path: str) -> tuple[int, int] | None:
  """(identity, camera) from a Market/Duke-style file name, else None."""
  match = _MARKET_NAME.match(os.path.basename(path))
  return (int(match.group(1)), int(match.group(2))) if match else None


def _batches(paths: Sequence[str], info: ModelInfo, batch_size: int,
             failed: list[tuple[str, str]], kept: list[str],
             bar: console.ProgressBar) -> Iterator[dict[str, np.ndarray]]:
  done = 0
  for start in range(0, len(paths), batch_size):
    images = []
    for path in paths[start:start + batch_size]:
      try:
        images.append(features_lib.load_image(path, info.image_size,
                                              info.lr_interpolation))
        kept.append(path)
      except (UnreadableImageError, OSError, ValueError) as e:
        failed.append((path, str(e)))
    done += len(paths[start:start + batch_size])
    bar.update(done)
    if images:
      yield {"image": np.stack(images)}


def embed(model, variables, info: ModelInfo, images: Iterable[str], *,
          batch_size: int = 32, keep_sr: bool = False,
          title: str = "extract") -> Embedded:
  """Flip-summed, L2-normalised features of every readable image.

  Args:
    model, variables, info: as `load_model` returns them.
    images: image paths.
    batch_size: images per compiled batch.
    keep_sr: also return the SR output (for a few query images).
    title: the progress bar's title.

  Raises:
    UnreadableImageError: no image could be read (the message names why).
  """
  paths = list(images)
  failed, kept = [], []
  bar = console.ProgressBar(title, len(paths), unit="images",
                            every=max(1, len(paths) // 10), stream=None)
  try:
    out = features_lib.extract_features(
        model.apply, variables,
        _batches(paths, info, batch_size, failed, kept, bar),
        batch_size=batch_size, return_sr=keep_sr)
  except ValueError as e:
    if not kept:  # extract_features saw no batch: nothing was readable.
      raise UnreadableImageError(
          "no image could be read: " + "; ".join(
              f"{p}: {r}" for p, r in failed[:5])) from e
    raise
  finally:
    bar.close()
  feats, sr = out if keep_sr else (out, None)
  return Embedded(feats, kept, failed, sr)


def save_features(path: str, embedded: Embedded, info: ModelInfo) -> None:
  """Writes features, file names and the model's identity to an .npz."""
  meta = {"format": FEATURES_FORMAT, "model_path": info.path,
          "kind": info.kind, "fingerprint": info.fingerprint,
          "image_size": list(info.image_size),
          "failed": embedded.failed}
  with atomic.atomic_file(path) as tmp, open(tmp, "wb") as f:
    np.savez(f, features=embedded.features,
             paths=np.array(embedded.paths, dtype=str),
             meta=np.array(json.dumps(meta)))


def load_features(path: str, fingerprint: str | None = None
                  ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
  """Features, file names and metadata written by `save_features`.

  Args:
    path: the .npz file.
    fingerprint: when given, the model the features must come from.

  Raises:
    ConfigError: not a features file of this format, of another model, or
      damaged (non-finite features, not one row per path).
  """
  try:
    with np.load(path, allow_pickle=False) as data:
      meta = json.loads(str(data["meta"]))
      feats, paths = data["features"], [str(p) for p in data["paths"]]
  except (OSError, KeyError, IndexError, TypeError, ValueError) as e:
    raise ConfigError(f"{path} is not a features file written by "
                      f"pshrnet_jax.extract ({e}).") from e
  if not isinstance(meta, dict) or meta.get("format") != FEATURES_FORMAT:
    raise ConfigError(f"{path}: not a features file of the format "
                      f"{FEATURES_FORMAT}.")
  if fingerprint is not None and meta.get("fingerprint") != fingerprint:
    raise ConfigError(
        f"{path} holds features of another model ({meta.get('model_path')});"
        " extract the gallery again with this model.")
  _check_features(path, feats, paths)
  return feats, paths, meta


def _check_features(path: str, feats: np.ndarray, paths: list[str]) -> None:
  """A features file's rows: float (N, D), N >= 1, finite, one per path."""
  problem = None
  if feats.ndim != 2 or feats.dtype.kind != "f" or not len(feats):
    problem = f"features of shape {feats.shape} and type {feats.dtype}"
  elif len(paths) != len(feats):
    problem = f"{len(feats)} feature rows for {len(paths)} paths"
  elif not np.isfinite(feats).all():
    rows = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    problem = (f"non-finite features in {len(rows)} row(s) (of "
               f"{checks.list_names([paths[i] for i in rows], 3)})")
  if problem:
    raise ConfigError(
        f"{path} is damaged: {problem}; expected N finite rows of features, "
        "one per path. Extract the gallery again.")


def search(query: np.ndarray, gallery: np.ndarray, top_k: int, *,
           rerank: dict[str, Any] | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """The `top_k` nearest gallery entries per query.

  Args:
    query, gallery, top_k: as for `evaluation.features.rank_gallery`.
    rerank: None for distance 1 - dot; else k-reciprocal re-ranking with
      these keyword arguments (k1, k2, lambda_value) of
      `evaluation.rerank.rerank_features`, and its distances.

  Returns:
    (indices (Q, k), distances (Q, k)), nearest first, ties by index.
  """
  if rerank is None:
    return features_lib.rank_gallery(query, gallery, top_k=top_k)
  rows = rerank_lib.rerank_features(query, gallery, metric="cosine", **rerank)
  return features_lib.nearest(rows.rows, len(query), len(gallery), top_k)


def write_report(out_dir: str, queries: Embedded, indices: np.ndarray,
                 distances: np.ndarray, gallery_paths: Sequence[str],
                 skipped: Sequence[tuple[str, str]], *, model: str,
                 gallery_source: str) -> None:
  """ranked_list.png and search.json of a search into `out_dir`.

  Frames are green/red when every file name carries an identity (Market
  style), grey otherwise.
  """
  os.makedirs(out_dir, exist_ok=True)
  ids = [identity_of(p) for p in gallery_paths]
  q_ids = [identity_of(p) for p in queries.paths]
  correct = None
  if all(i is not None for i in ids + q_ids):
    correct = np.array([[ids[j][0] == q_ids[r][0] for j in row]
                        for r, row in enumerate(indices)])
  with atomic.atomic_file(os.path.join(out_dir, REPORT_FILES[0])) as tmp:
    plots.save_ranked_list(tmp, queries.paths, gallery_paths, indices,
                           correct, sr_images=queries.sr)
  report = {"model": model, "gallery": gallery_source,
            "distance": "1 - cosine similarity of flip-summed features",
            "queries": [
                {"path": q, "matches": [
                    {"rank": k + 1, "path": gallery_paths[j],
                     "distance": float(distances[r, k]),
                     **({"pid": ids[j][0], "camid": ids[j][1]}
                        if ids[j] is not None else {})}
                    for k, j in enumerate(indices[r])]}
                for r, q in enumerate(queries.paths)],
            "skipped": [{"path": p, "reason": why} for p, why in skipped]}
  with atomic.atomic_file(os.path.join(out_dir, REPORT_FILES[1])) as tmp:
    with open(tmp, "w") as f:
      json.dump(report, f, indent=2)
