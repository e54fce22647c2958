"""Test-time features (SPEC 4): flip-summed, L2-normalised, batched and jit'd.

Model contract: `apply_fn(variables, x, train=False) -> (logits, aux)` with
`x` NHWC float32 ImageNet-normalised, `aux['feature']` = concat(seq5, l_f)
and, for the student, `aux['sr']` (the super-resolved input, normalised).
A feature is feature(image) + feature(horizontally flipped image), then
L2-normalised; ranking uses distance = 1 - dot product (cosine).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from data_pipelines.pipeline import transforms
from pshrnet_jax.models import layers
from pshrnet_jax.models.inputs import NETWORK_SIZE
from pshrnet_jax.models.inputs import denormalize_images
from pshrnet_jax.models.inputs import normalize_images

_NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps.

ApplyFn = Callable[..., Any]
ImageSource = Union[str, os.PathLike, np.ndarray, Image.Image]


# Jitted feature functions by model: a Flax module compares by its fields,
# so two equal modules share one traced and compiled function.
_FEATURE_FNS: dict[Any, Callable[..., Any]] = {}


def make_feature_fn(apply_fn: ApplyFn) -> Callable[..., tuple[jax.Array,
                                                             jax.Array]]:
  """A jit'd `(variables, images_uint8) -> (features, sr_or_input)`.

  Cached per model: for `module.apply` the key is the module's value, so
  the query and gallery passes, and later evaluations of an equal model,
  reuse one traced and compiled function.

  Args:
    apply_fn: the model's apply (module.apply), following the contract above.

  Returns:
    A function giving L2-normalised flip-summed features (B, D) and the SR
    output of the unflipped images (the normalised input when the model has
    no SR module).
  """

  @functools.partial(jax.jit, compiler_options=layers.compiler_options())
  def feature_fn(variables, images):
    x = normalize_images(images)
    both = jnp.concatenate([x, x[:, :, ::-1, :]], axis=0)
    _, aux = apply_fn(variables, both, train=False)
    feats = aux["feature"].astype(jnp.float32)
    batch = x.shape[0]
    summed = feats[:batch] + feats[batch:]
    norm = jnp.linalg.norm(summed, axis=1, keepdims=True)
    sr = aux["sr"][:batch] if "sr" in aux else x
    return summed / jnp.maximum(norm, _NORM_EPS), sr

  owner = getattr(apply_fn, "__self__", None)
  key = apply_fn if owner is None else (owner, apply_fn.__func__)
  return _FEATURE_FNS.setdefault(key, feature_fn)


SRCallback = Callable[[Mapping[str, np.ndarray], np.ndarray], None]


def extract_features(apply_fn: ApplyFn, variables: Any,
                     batches: Iterable[Mapping[str, np.ndarray]], *,
                     batch_size: int, return_sr: bool = False,
                     sr_callback: SRCallback | None = None) -> Any:
  """Features of every (valid) image in `batches`, in order.

  Each batch is padded to `batch_size` so one compiled function serves all
  batches, and the padding rows are dropped afterwards.

  Args:
    apply_fn: the model's apply function (module docstring).
    variables: the model variables ({'params': ..., 'batch_stats': ...}).
    batches: dicts with 'image' uint8 (B, H, W, 3), B <= batch_size, and
      optionally 'valid' (B,) bool marking the real rows (rows with False are
      padding, as `data_pipelines.pipeline.make_eval_batches` emits).
    batch_size: the fixed compiled batch size.
    return_sr: also return the SR output as RGB float32 in [0, 1]
      (N, H, W, 3); 393 KB per 256x128 image, so for small sets only.
    sr_callback: called per batch as `sr_callback(rows, sr)` with the batch's
      valid rows (every key of the batch) and their SR outputs
      (ImageNet-normalised), so a caller can score or keep some of them
      without holding all of them.

  Returns:
    (N, D) float32 features; with return_sr, (features, sr_images).

  Raises:
    ValueError: a batch without 'image', not uint8 RGB, or larger than
      batch_size; no batches at all.
  """
  feature_fn = make_feature_fn(apply_fn)
  features, srs = [], []
  for i, batch in enumerate(batches):
    if "image" not in batch:
      raise ValueError(f"batch {i} has no 'image' key (keys: {sorted(batch)})")
    images = np.asarray(batch["image"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"batch {i}: 'image' must be uint8 (B, H, W, 3), got "
                       f"{images.dtype} {images.shape}")
    n = images.shape[0]
    if n > batch_size:
      raise ValueError(f"batch {i} has {n} images, more than batch_size "
                       f"{batch_size}")
    valid = np.asarray(batch.get("valid", np.ones(n, bool)), bool)
    padded = np.zeros((batch_size,) + images.shape[1:], np.uint8)
    padded[:n] = images
    feats, sr = feature_fn(variables, padded)
    features.append(np.asarray(feats)[:n][valid])
    if return_sr or sr_callback is not None:
      sr = np.asarray(sr)[:n][valid]
      if sr_callback is not None:
        sr_callback({k: np.asarray(v)[valid] for k, v in batch.items()}, sr)
      if return_sr:
        srs.append(denormalize_images(sr))
  if not features:
    raise ValueError("no batches: nothing to extract features from")
  features = np.concatenate(features)
  return (features, np.concatenate(srs)) if return_sr else features


def load_image(source: ImageSource, size: tuple[int, int] = NETWORK_SIZE,
               interpolation: str = "bilinear") -> np.ndarray:
  """One image as uint8 RGB (H, W, 3), resized to `size`, decoded as the
  training pipeline decodes (any mode to RGB, EXIF orientation applied).

  Args:
    source: a file path, a PIL image, or a uint8 array (H, W, 3) or (H, W).
    size: (height, width) of the network input.
    interpolation: 'bilinear' (default) or 'bicubic'.

  Returns:
    uint8 (size[0], size[1], 3).

  Raises:
    FileNotFoundError: a path that does not exist.
    ValueError: an array that is not uint8 (H, W[, 3]), or a file that is not
      a decodable image.
  """
  if isinstance(source, Image.Image):
    image = source.convert("RGB")
  else:
    if isinstance(source, os.PathLike):
      source = os.fspath(source)
    elif not isinstance(source, str):
      source = np.asarray(source)
    image = transforms.decode_image(source)
  return transforms.resize_to(image, size, interpolation)


def features_from_images(apply_fn: ApplyFn, variables: Any,
                         sources: Sequence[ImageSource], *,
                         batch_size: int = 32,
                         size: tuple[int, int] = NETWORK_SIZE) -> np.ndarray:
  """Features of one's own photos (paths or arrays of any size).

  Args:
    apply_fn: the model's apply function.
    variables: the model variables.
    sources: image paths, PIL images or uint8 arrays, any size.
    batch_size: images per compiled batch.
    size: network input (height, width); images are resized bilinearly.

  Returns:
    (len(sources), D) float32 L2-normalised features.
  """
  sources = list(sources)
  batches = ({"image": np.stack([load_image(s, size)
                                 for s in sources[i:i + batch_size]])}
             for i in range(0, len(sources), batch_size))
  return extract_features(apply_fn, variables, batches, batch_size=batch_size)


def rank_gallery(query_features: np.ndarray, gallery_features: np.ndarray,
                 top_k: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """The `top_k` nearest gallery entries of each query (distance 1 - dot).

  Args:
    query_features: (Q, D) L2-normalised features.
    gallery_features: (G, D) L2-normalised features.
    top_k: how many to return (clipped to G).

  Returns:
    (indices int64 (Q, k), distances float32 (Q, k)), nearest first; equal
    distances among the returned entries are ordered by gallery index.
  """
  qf = np.atleast_2d(np.asarray(query_features, np.float32))
  gf = np.atleast_2d(np.asarray(gallery_features, np.float32))
  if qf.shape[1] != gf.shape[1]:
    raise ValueError(f"feature dims differ: query {qf.shape}, gallery "
                     f"{gf.shape}")
  if gf.shape[0] == 0:
    raise ValueError("empty gallery: no gallery features to rank")
  k = min(top_k, gf.shape[0])
  indices = np.empty((qf.shape[0], k), np.int64)
  distances = np.empty((qf.shape[0], k), np.float32)
  chunk = max(1, (64 << 20) // (4 * gf.shape[0]))
  for s in range(0, qf.shape[0], chunk):
    dist = 1.0 - qf[s:s + chunk] @ gf.T
    part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    # Sort candidates by (distance, index) so ties are deterministic.
    part.sort(axis=1)
    d = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(d, axis=1, kind="stable")
    indices[s:s + chunk] = np.take_along_axis(part, order, axis=1)
    distances[s:s + chunk] = np.take_along_axis(d, order, axis=1)
  return indices, distances
