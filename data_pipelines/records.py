"""The record types every dataset reader produces and every pipeline consumes."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional


class ImageRecord(NamedTuple):
  """One image of a re-ID set.

  Attributes:
    hr_path: the high-resolution original.
    pid: person identity as written in the dataset (not remapped). 0 may be a
      distractor (Market/Duke gallery); junk (-1) never reaches a record.
    camid: camera index, 0-based.
    lr_path: the low-resolution version of the same image, when the benchmark
      has one (MLR query images, and every training image of an MLR set so
      training can form HR/LR pairs). None for HR-only images.
    lr_factor: the down-sampling factor r of `lr_path` (2, 3 or 4); 1 when
      there is no LR version, and also for a genuine LR image (CAVIAR's LR
      camera, where `lr_path == hr_path`); 0 when unknown (a pre-built LR
      folder whose sizes are not an exact 2/3/4 ratio).
  """
  hr_path: str
  pid: int
  camid: int
  lr_path: Optional[str] = None
  lr_factor: int = 1

  @property
  def has_hr_original(self) -> bool:
    """False for a genuine LR image (its `hr_path` is the LR file itself):
    it has no HR original to train L_SR / L_PS against or to score SR
    quality with, and phase 1 (HR images only) does not train on it."""
    return self.lr_path is None or self.lr_path != self.hr_path

  @property
  def input_path(self) -> str:
    """The file the model sees at test time: the LR version when present."""
    return self.lr_path if self.lr_path is not None else self.hr_path


# Which gallery images the evaluation removes for a query. torchreid's rule:
# those of the query's identity AND camera. Data without camera ids: only
# the query image itself (any other image of the identity is a match).
SAME_IDENTITY_SAME_CAMERA = "same_identity_same_camera"
QUERY_IMAGE_ONLY = "query_image_only"


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A benchmark split: training images, LR queries and the HR gallery.

  Attributes:
    name: e.g. "mlr_cuhk03".
    train: training images (each with an LR version on cross-resolution sets).
    query: query images (LR on cross-resolution sets).
    gallery: gallery images (HR).
    protocol: "multi_shot" (Market/Duke evaluation) or "single_shot" (one
      random gallery image per identity, averaged over trials).
    gallery_exclusion: SAME_IDENTITY_SAME_CAMERA, or QUERY_IMAGE_ONLY for
      data without camera ids (their records all have camid 0).
  """
  name: str
  train: tuple[ImageRecord, ...]
  query: tuple[ImageRecord, ...]
  gallery: tuple[ImageRecord, ...]
  protocol: str = "multi_shot"
  gallery_exclusion: str = SAME_IDENTITY_SAME_CAMERA
