"""Pictures people would rather look at than read: CMC curves, ranked lists.

`plot_cmc` draws CMC curves with matplotlib (Agg backend: no display needed).
`save_ranked_list` draws, per query, the LR query, its SR restoration and
the top-k gallery images framed green (same person) or red (another).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")  # Headless: reports are written on servers.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
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
  """Saves CMC curves (percent vs rank) as a PNG of `size_px` (width, height).

  Args:
    path: the PNG to write.
    results: one RankResult, or label -> RankResult for several curves.
    max_rank: last rank plotted.
    size_px: image (width, height) in pixels.
    dpi: resolution used to size the figure.

  Returns:
    `path`.
  """
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
  """Top-k gallery indices per query and whether each is a correct match.

  Gallery entries with the query's identity and camera are skipped, as in the
  metrics; ties are ordered by gallery index.

  Args:
    distances: (Q, G) distances.
    q_pids: (Q,) query identities.
    g_pids: (G,) gallery identities.
    q_camids: (Q,) query cameras.
    g_camids: (G,) gallery cameras.
    top_k: how many per query.

  Returns:
    (indices (Q, top_k) int64, correct (Q, top_k) bool).
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
  """(y, x) of the top-left pixel of a framed cell in `save_ranked_list`.

  Column 0 is the LR query, 1 its SR output (when given), then ranks 1..k.
  """
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
    gallery_images: gallery images by index: a sequence of paths/arrays, or a
      function index -> uint8 image (to avoid loading the whole gallery).
    ranked_indices: (Q, k) gallery indices, nearest first.
    correct: (Q, k) bool, True where the gallery image is the query's person;
      None when identities are unknown (your own photos): grey frames.
    sr_images: Q SR outputs (RGB [0, 1] float or uint8), drawn beside the
      queries; None for no SR column.
    cell_size: (height, width) every image is resized to (bilinear).
    border: frame width in pixels (green correct, red wrong, grey query).
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
  columns = first + top_k
  height = ranked_list_box_origin(num_q, 0, cell_size=cell_size,
                                  border=border, gap=gap)[0]
  width = ranked_list_box_origin(0, columns, cell_size=cell_size,
                                 border=border, gap=gap)[1]
  canvas = np.empty((height, width, 3), np.uint8)
  canvas[:] = BACKGROUND

  def put(row, col, image, color):
    y, x = ranked_list_box_origin(row, col, cell_size=cell_size, border=border,
                                  gap=gap)
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
    x = ranked_list_box_origin(0, c, cell_size=cell_size, border=border,
                               gap=gap)[1]
    draw.text((x + border, 2), label, fill=(0, 0, 0))
  picture.save(path)
  return picture.size
