"""Image decoding, resizing to the network size, and the paired augmentation.

Augmentation (SPEC 3), the same parameters for both images of an HR/LR pair,
in torchvision's Compose([RandomHorizontalFlip, Pad, RandomCrop]) order:
flip with p = 0.5, zero-pad 10 on every side, crop back to (H, W) with the
top-left corner uniform in [0, 2 * pad] in each axis.
"""

from __future__ import annotations

import io
import os
from typing import NamedTuple, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

from data_pipelines import errors

PAD = 10
FLIP_PROB = 0.5

_INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def interpolation_mode(name: str) -> Image.Resampling:
  """The PIL filter of 'bilinear' or 'bicubic'; ValueError for other names."""
  if name not in _INTERPOLATIONS:
    raise ValueError(
        f"unknown interpolation {name!r}; expected one of {sorted(_INTERPOLATIONS)}")
  return _INTERPOLATIONS[name]


def decode_image(source: Union[str, bytes, np.ndarray],
                 what: str = "image") -> Image.Image:
  """Opens an image file, encoded bytes or a uint8 HxWx3 array as RGB.

  Any mode (grayscale, palette, RGBA: alpha dropped) becomes RGB, and an
  EXIF orientation is applied.

  Args:
    source: a file path, encoded image bytes, or an already decoded array.
    what: how to name the image in error messages when it is not a path.

  Returns:
    The RGB PIL image.

  Raises:
    errors.DatasetNotFoundError: the path does not exist.
    errors.UnreadableImageError: the content is not a decodable image.
  """
  if isinstance(source, np.ndarray):
    if source.ndim == 3 and source.shape[2] == 1:
      source = source[:, :, 0]
    if source.dtype != np.uint8 or not (
        source.ndim == 2 or (source.ndim == 3 and source.shape[2] == 3)):
      raise errors.UnreadableImageError(
          f"{what}: expected a uint8 HxWx3 array, got {source.dtype} {source.shape}")
    return Image.fromarray(source).convert("RGB")
  name = source if isinstance(source, str) else what
  if isinstance(source, str) and not os.path.isfile(source):
    raise errors.DatasetNotFoundError(f"image file not found: {source}")
  try:
    fileobj = source if isinstance(source, str) else io.BytesIO(source)
    with Image.open(fileobj) as image:
      # Photos taken rotated carry the rotation in EXIF: apply it, as
      # viewers do (re-ID datasets carry none, so they are unchanged).
      return ImageOps.exif_transpose(image).convert("RGB")
  except errors.IMAGE_DECODE_ERRORS as e:
    raise errors.UnreadableImageError(f"cannot decode image {name}: {e}") from e


def resize_to(image: Image.Image, image_size: tuple[int, int],
              interpolation: str = "bilinear") -> np.ndarray:
  """An RGB image resized to (H, W) (unless already that size), as uint8."""
  height, width = image_size
  if image.size != (width, height):
    image = image.resize((width, height), interpolation_mode(interpolation))
  return np.asarray(image, dtype=np.uint8)


def load_resized(source: Union[str, bytes, np.ndarray], image_size: tuple[int, int],
                 interpolation: str = "bilinear", what: str = "image") -> np.ndarray:
  """`decode_image` then `resize_to`: uint8 (H, W, 3) at the network size."""
  return resize_to(decode_image(source, what), image_size, interpolation)


class CropParams(NamedTuple):
  """Augmentation parameters of a batch; one entry per example.

  Attributes:
    flip: bool (B,), horizontal flip.
    top: int (B,), crop row in the padded image, in [0, 2 * pad].
    left: int (B,), crop column in the padded image, in [0, 2 * pad].
  """
  flip: np.ndarray
  top: np.ndarray
  left: np.ndarray


def sample_crop_params(rng: np.random.Generator, batch_size: int,
                       pad: int = PAD) -> CropParams:
  """Draws flip / crop parameters for `batch_size` examples."""
  flip = rng.random(batch_size) < FLIP_PROB
  top = rng.integers(0, 2 * pad + 1, size=batch_size)
  left = rng.integers(0, 2 * pad + 1, size=batch_size)
  return CropParams(flip, top, left)


def flip_pad_crop(images: np.ndarray, indices: Sequence[int], params: CropParams,
                  pad: int = PAD) -> np.ndarray:
  """uint8 (len(indices), H, W, C): images[indices] flipped, zero-padded by
  `pad` and cropped back to (H, W), one `params` entry per output example
  (`images` may be memory-mapped)."""
  _, height, width, channels = images.shape
  out = np.zeros((len(indices), height, width, channels), np.uint8)
  for b, index in enumerate(indices):
    image = images[index]
    if params.flip[b]:
      image = image[:, ::-1]
    # Crop window [top, top + H) of the padded image = rows [top - pad,
    # top - pad + H) of the image; copy only the part inside the image.
    dy, dx = int(params.top[b]) - pad, int(params.left[b]) - pad
    y0, y1 = max(0, dy), min(height, dy + height)
    x0, x1 = max(0, dx), min(width, dx + width)
    if y1 > y0 and x1 > x0:  # else (pad >= size) the window is all padding
      out[b, y0 - dy:y1 - dy, x0 - dx:x1 - dx] = image[y0:y1, x0:x1]
  return out
