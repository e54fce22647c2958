"""Pictures: CMC curves (matplotlib, Agg backend), ranked lists (PIL)."""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

from pshrnet_jax.evaluation.features import load_image
from pshrnet_jax.evaluation.metrics import RankResult

CORRECT_COLOR = (0, 200, 0)
WRONG_COLOR = (220, 0, 0)
QUERY_COLOR = (128, 128, 128)
BACKGROUND = (255, 255, 255)
HEADER_HEIGHT = 16

GalleryImages = Union[Sequence, Callable[[int], np.ndarray]]


def plot_cmc(path: str, results: Union[RankResult, Mapping[str, RankResult]],
             *, max_rank: int = 50, size_px: tuple[int, int] = (600, 400),
             dpi: int = 100) -> str:
  """Saves CMC curves (percent vs rank) of one RankResult or of label ->
  RankResult as a `size_px` (width, height) PNG at `path`; returns `path`."""
  # Imported here: matplotlib costs every process that starts the trainer
  # about half a second, and only the end of an evaluation draws.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # Headless: reports are written on servers.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  if isinstance(results, RankResult):
    results = {"": results}
  fig, ax = plt.subplots(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
  for label, r in results.items():
    n = min(max_rank, len(r.cmc))
    ax.plot(np.arange(1, n + 1), np.asarray(r.cmc[:n]) * 100,
            label=f"{label} R1 {r.rank(1) * 100:.1f}".strip())
  ax.set_xlabel("rank")
  ax.set_ylabel("matching rate (%)")
  ax.set_title("CMC")
  ax.set_ylim(0, 101)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def ranked_matches(distances: np.ndarray, q_pids: np.ndarray,
                   g_pids: np.ndarray, q_camids: np.ndarray,
                   g_camids: np.ndarray, top_k: int = 10
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(Q, top_k) gallery indices of each query's nearest, nearest first, and
  whether each is the query's identity.

  Gallery entries with the query's identity and camera are skipped, as in the
  metrics; ties go by gallery index.
  """
  distances = np.array(distances, dtype=np.float64)
  g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
  same = ((np.asarray(q_pids)[:, None] == g_pids[None]) &
          (np.asarray(q_camids)[:, None] == g_camids[None]))
  distances[same] = np.inf
  order = np.argsort(distances, axis=1, kind="stable")[:, :top_k]
  return order, g_pids[order] == np.asarray(q_pids)[:, None]


def _framed(image: np.ndarray, color, border: int) -> np.ndarray:
  h, w = image.shape[:2]
  out = np.empty((h + 2 * border, w + 2 * border, 3), np.uint8)
  out[:] = color
  out[border:border + h, border:border + w] = image
  return out


def _to_uint8(image) -> np.ndarray:
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
  return arr


def ranked_list_box_origin(row: int, column: int, *,
                           cell_size: tuple[int, int] = (128, 64),
                           border: int = 4, gap: int = 6) -> tuple[int, int]:
  """(y, x) of the top-left pixel of a framed cell in `save_ranked_list`:
  column 0 the LR query, 1 its SR output (when given), then ranks 1..k."""
  box_h, box_w = cell_size[0] + 2 * border, cell_size[1] + 2 * border
  return (HEADER_HEIGHT + gap + row * (box_h + gap), gap + column *
          (box_w + gap))


def save_ranked_list(path: str, query_images: Sequence,
                     gallery_images: GalleryImages,
                     ranked_indices: np.ndarray,
                     correct: Optional[np.ndarray], *,
                     sr_images: Optional[Sequence] = None,
                     cell_size: tuple[int, int] = (128, 64),
                     border: int = 4, gap: int = 6) -> tuple[int, int]:
  """Draws queries, their SR output and top-k gallery images framed green/red.

  Args:
    path: the PNG to write.
    query_images: Q LR query images (paths, uint8 arrays or [0, 1] floats).
    gallery_images: a sequence of paths/arrays, or a function index -> image
      (to avoid loading the whole gallery).
    ranked_indices: (Q, k) gallery indices, nearest first.
    correct: (Q, k) bool, True for the query's person; None when identities
      are unknown (grey frames).
    sr_images: Q SR outputs (RGB [0, 1] float or uint8), or None.
    cell_size: (height, width) every image is resized to (bilinear).
    border: frame width in pixels.
    gap: white space between cells.

  Returns:
    The image (width, height).
  """
  ranked_indices = np.asarray(ranked_indices)
  unknown = correct is None
  correct = (np.zeros(ranked_indices.shape, bool) if unknown
             else np.asarray(correct))
  num_q, top_k = ranked_indices.shape
  if correct.shape != ranked_indices.shape or len(query_images) != num_q:
    raise ValueError(f"ranked_indices {ranked_indices.shape}, correct "
                     f"{correct.shape} and {len(query_images)} query images "
                     f"do not match")
  if sr_images is not None and len(sr_images) != num_q:
    raise ValueError(f"{len(sr_images)} SR images for {num_q} queries")
  get = gallery_images if callable(gallery_images) else (
      lambda i: gallery_images[i])
  first = 2 if sr_images is not None else 1
  origin = functools.partial(ranked_list_box_origin, cell_size=cell_size,
                             border=border, gap=gap)
  canvas = np.empty((origin(num_q, 0)[0], origin(0, first + top_k)[1], 3),
                    np.uint8)
  canvas[:] = BACKGROUND

  def put(row, col, image, color):
    y, x = origin(row, col)
    box = _framed(load_image(_to_uint8(image) if not isinstance(image, str)
                             else image, cell_size), color, border)
    canvas[y:y + box.shape[0], x:x + box.shape[1]] = box

  for r in range(num_q):
    put(r, 0, query_images[r], QUERY_COLOR)
    if sr_images is not None:
      put(r, 1, sr_images[r], QUERY_COLOR)
    for k in range(top_k):
      put(r, first + k, get(int(ranked_indices[r, k])),
          QUERY_COLOR if unknown else
          CORRECT_COLOR if correct[r, k] else WRONG_COLOR)
  picture = Image.fromarray(canvas)
  draw = ImageDraw.Draw(picture)
  labels = ["query"] + (["SR"] if sr_images is not None else []) + [
      str(k + 1) for k in range(top_k)]
  for c, label in enumerate(labels):
    draw.text((origin(0, c)[1] + border, 2), label, fill=(0, 0, 0))
  picture.save(path)
  return picture.size
