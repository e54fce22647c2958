"""Test-time features (SPEC 4): flip-summed, L2-normalised, batched and jit'd.

Model contract: `apply_fn(variables, x, train=False) -> (logits, aux)` with
`x` NHWC float32 ImageNet-normalised, `aux['feature']` = concat(seq5, l_f)
and, for the student, `aux['sr']` (the normalised SR output). Ranking uses
distance = 1 - dot product.
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
_FEATURE_FNS: dict[Any, Callable[..., Any]] = {}  # See make_feature_fn.


def _first(pair: jax.Array) -> jax.Array:
  return jax.lax.index_in_dim(pair, 0, keepdims=False)


def flip_summed(apply_fn: ApplyFn, variables: Any,
                images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(B, D) L2-normalised feature(x) + feature(flipped x) of uint8 images, and
  the SR output of the unflipped ones (the normalised input without SR)."""
  x = normalize_images(images)
  both = jnp.concatenate([x, jnp.flip(x, axis=2)], axis=0)
  _, aux = apply_fn(variables, both, train=False)
  feats = aux["feature"].astype(jnp.float32)
  # The halves by a reshape and static slices, not slices at the batch size:
  # with a symbolic batch (jax.export, ONNX) those would be gathers.
  halves = feats.reshape(2, x.shape[0], feats.shape[-1])
  summed = _first(halves) + jax.lax.index_in_dim(halves, 1, keepdims=False)
  norm = jnp.linalg.norm(summed, axis=1, keepdims=True)
  sr = _first(aux["sr"].reshape(2, *x.shape)) if "sr" in aux else x
  return summed / jnp.maximum(norm, _NORM_EPS), sr


def make_feature_fn(apply_fn: ApplyFn) -> Callable[..., tuple[jax.Array,
                                                             jax.Array]]:
  """`flip_summed` jitted, `(variables, images_uint8) -> (features, sr)`.

  Cached per model (for `module.apply`, by the module's value: a Flax module
  compares by its fields), so the query and gallery passes, and later
  evaluations of an equal model, share one compiled function.
  """
  owner = getattr(apply_fn, "__self__", None)
  key = apply_fn if owner is None else (owner, apply_fn.__func__)
  return _FEATURE_FNS.setdefault(key, jax.jit(
      functools.partial(flip_summed, apply_fn),
      compiler_options=layers.compiler_options()))


SRCallback = Callable[[Mapping[str, np.ndarray], np.ndarray], None]


def extract_features(apply_fn: ApplyFn, variables: Any,
                     batches: Iterable[Mapping[str, np.ndarray]], *,
                     batch_size: int, return_sr: bool = False,
                     sr_callback: SRCallback | None = None) -> Any:
  """Features of every (valid) image in `batches`, in order.

  Each batch is padded to `batch_size` (one compiled shape).

  Args:
    apply_fn: the model's apply function (module docstring).
    variables: the model variables ({'params': ..., 'batch_stats': ...}).
    batches: dicts with 'image' uint8 (B, H, W, 3), B <= batch_size, and
      optionally 'valid' (B,) bool, False on padding rows (as
      `data_pipelines.pipeline.make_eval_batches` emits).
    batch_size: the fixed compiled batch size.
    return_sr: also return the SR output as RGB float32 in [0, 1]
      (N, H, W, 3); 393 KB per 256x128 image, so for small sets only.
    sr_callback: called per batch as `sr_callback(rows, sr)` with the batch's
      valid rows (every key) and their normalised SR outputs, so a caller can
      score or keep some without holding all.

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
  """One image as uint8 RGB (size[0], size[1], 3), decoded as in training
  (any mode to RGB, EXIF orientation applied).

  Args:
    source: a file path, a PIL image, or a uint8 array (H, W, 3) or (H, W).
    size: (height, width) of the network input.
    interpolation: 'bilinear' (default) or 'bicubic'.

  Raises:
    FileNotFoundError: a path that does not exist.
    ValueError: an array that is not uint8 (H, W[, 3]), or a file that is not
      a decodable image.
  """
  if isinstance(source, Image.Image):
    image = source.convert("RGB")
  else:
    image = transforms.decode_image(
        os.fspath(source) if isinstance(source, (str, os.PathLike))
        else np.asarray(source))
  return transforms.resize_to(image, size, interpolation)


def features_from_images(apply_fn: ApplyFn, variables: Any,
                         sources: Sequence[ImageSource], *,
                         batch_size: int = 32,
                         size: tuple[int, int] = NETWORK_SIZE) -> np.ndarray:
  """(len(sources), D) features of one's own photos (paths, PIL images or
  uint8 arrays, any size, resized bilinearly to `size`)."""
  sources = list(sources)
  batches = ({"image": np.stack([load_image(s, size)
                                 for s in sources[i:i + batch_size]])}
             for i in range(0, len(sources), batch_size))
  return extract_features(apply_fn, variables, batches, batch_size=batch_size)


def rank_gallery(query_features: np.ndarray, gallery_features: np.ndarray,
                 top_k: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """The `top_k` (clipped to G) nearest gallery entries of each query.

  Args:
    query_features: (Q, D) L2-normalised features.
    gallery_features: (G, D) L2-normalised features.
    top_k: how many to return.

  Returns:
    (indices int64 (Q, k), distances 1 - dot float32 (Q, k)), nearest first;
    equal distances among the returned entries are ordered by gallery index.
  """
  qf = np.atleast_2d(np.asarray(query_features, np.float32))
  gf = np.atleast_2d(np.asarray(gallery_features, np.float32))
  if qf.shape[1] != gf.shape[1]:
    raise ValueError(f"feature dims differ: query {qf.shape}, gallery "
                     f"{gf.shape}")
  if gf.shape[0] == 0:
    raise ValueError("empty gallery: no gallery features to rank")
  return nearest(lambda s, e: 1.0 - qf[s:e] @ gf.T, len(qf), len(gf), top_k,
                 rows_per_chunk=max(1, (64 << 20) // (4 * len(gf))))


def nearest(distance_rows: Callable[[int, int], np.ndarray], num_query: int,
            num_gallery: int, top_k: int, *, rows_per_chunk: int = 256
            ) -> tuple[np.ndarray, np.ndarray]:
  """`rank_gallery`'s result from `(start, stop) -> distances` of queries
  start..stop-1, computed `rows_per_chunk` queries at a time."""
  k = min(top_k, num_gallery)
  indices = np.empty((num_query, k), np.int64)
  distances = np.empty((num_query, k), np.float32)
  for s in range(0, num_query, rows_per_chunk):
    dist = distance_rows(s, min(s + rows_per_chunk, num_query))
    part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    # Sort candidates by (distance, index) so ties are deterministic.
    part.sort(axis=1)
    d = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(d, axis=1, kind="stable")
    indices[s:s + len(dist)] = np.take_along_axis(part, order, axis=1)
    distances[s:s + len(dist)] = np.take_along_axis(d, order, axis=1)
  return indices, distances
