"""The HRNet-ReID representation head (SPEC 1.3): each incre_modules output
pooled (PyTorch's adaptive pooling), flattened channel-major (so PyTorch FC
weights line up), concatenated into Seq5 and fed to the released code's
ClassBlock (Linear -> BatchNorm1d -> Dropout -> Linear); `PooledHead` puts
the ClassBlock on one globally pooled vector.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pshrnet_jax.models import layers

Dtype = Any

# Output grid of the adaptive pooling per branch, and the weight of the max
# pool in `avg + lambda * max` (SPEC 1.3 table).
POOL_SIZES = (4, 2, 2, 1)
MAX_WEIGHTS = (0.5, 0.2, 0.2, 0.2)
POOLING_MODES = ("avg", "max", "avgmax")
EMBED_FEATURES = 512

# Released code: Linear kaiming-normal fan_out, BatchNorm1d weight N(1, 0.02),
# classifier N(0, 0.001); biases zero.
_fc1_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_fc2_init = nn.initializers.normal(stddev=0.001)


def _bn1d_scale_init(key: jax.Array, shape: Sequence[int],
                     dtype: Dtype = jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
  # PyTorch's rule: bin i covers [floor(i*size/out), ceil((i+1)*size/out)).
  return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_pool(x: jax.Array, output_size: int, mode: str) -> jax.Array:
  """PyTorch-exact AdaptiveAvgPool2d / AdaptiveMaxPool2d ('avg', 'max') of
  (B, H, W, C) maps to (B, output_size, output_size, C): PyTorch's bins (maybe
  overlapping or unequal), pooled along H then W (both separate over
  rectangles)."""
  if mode not in ("avg", "max"):
    raise ValueError(f"adaptive_pool mode must be 'avg' or 'max', got {mode!r}")
  if x.shape[1] < output_size or x.shape[2] < output_size:
    raise ValueError(f"cannot pool a {x.shape[1]}x{x.shape[2]} map to "
                     f"{output_size}x{output_size}")
  reduce = jnp.mean if mode == "avg" else jnp.max
  for axis in (1, 2):
    size = x.shape[axis]
    if size % output_size == 0:
      # Equal bins: one reshape instead of `output_size` slices.
      shape = x.shape[:axis] + (output_size, size // output_size) + x.shape[axis + 1:]
      x = reduce(x.reshape(shape), axis=axis + 1)
    else:
      x = jnp.concatenate(
          [reduce(jax.lax.slice_in_dim(x, lo, hi, axis=axis), axis=axis,
                  keepdims=True)
           for lo, hi in _adaptive_bins(size, output_size)], axis=axis)
  return x


def pool_branch(x: jax.Array, output_size: int, max_weight: float,
                pooling: str) -> jax.Array:
  """One (B, H, W, C) branch pooled to s x s ('avg', 'max' or 'avgmax' =
  avg + max_weight * max), as (B, C * s * s) in NCHW `.view(B, -1)` order."""
  if pooling == "avg":
    y = adaptive_pool(x, output_size, "avg")
  elif pooling == "max":
    y = adaptive_pool(x, output_size, "max")
  elif pooling == "avgmax":
    y = (adaptive_pool(x, output_size, "avg")
         + max_weight * adaptive_pool(x, output_size, "max"))
  else:
    raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
  return jnp.transpose(y, (0, 3, 1, 2)).reshape(y.shape[0], -1)


def class_block(seq5: jax.Array, num_classes: int, train: bool, *,
                embed_features: int = EMBED_FEATURES,
                dropout_rate: float = 0.5, dtype: Dtype = jnp.float32
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The released code's ClassBlock (FC1 -> BN1d -> Dropout -> FC2) on the
  (B, D) representation `seq5`: (logits, aux) with float32 l_f, logits and
  feature = concat(seq5, l_f). Called from a compact method, `fc1`, `bn` and
  `fc2` become the caller's children (the paths PyTorch weights load into).
  """
  y = nn.Dense(embed_features, dtype=dtype, param_dtype=jnp.float32,
               kernel_init=_fc1_init, name="fc1")(seq5)
  l_f = layers.BatchNorm(use_running_average=not train, dtype=dtype,
                         scale_init=_bn1d_scale_init, name="bn")(y)
  y = nn.Dropout(dropout_rate, deterministic=not train)(l_f)
  logits = nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=_fc2_init, name="fc2")(y)
  aux = {"l_f": l_f.astype(jnp.float32), "logits": logits.astype(jnp.float32)}
  aux["feature"] = jnp.concatenate([seq5.astype(jnp.float32), aux["l_f"]],
                                   axis=-1)
  return aux["logits"], aux


class ReIDHead(nn.Module):
  """Pooling ('avg', 'max', 'avgmax': Table V), Seq1..Seq5, the ClassBlock;
  the four incre_modules outputs -> (logits, aux: seq1..seq5, l_f, logits,
  feature), float32."""
  num_classes: int
  pooling: str = "avgmax"
  embed_features: int = EMBED_FEATURES
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array],
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    if len(xs) != len(POOL_SIZES):
      raise ValueError(f"ReIDHead expects {len(POOL_SIZES)} branches, "
                       f"got {len(xs)}")
    aux = {}
    for n, (x, size, weight) in enumerate(zip(xs, POOL_SIZES, MAX_WEIGHTS), 1):
      aux[f"seq{n}"] = pool_branch(x, size, weight, self.pooling)
    aux["seq5"] = jnp.concatenate([aux[f"seq{n}"] for n in range(1, 5)],
                                  axis=-1)
    logits, head_aux = class_block(
        aux["seq5"], self.num_classes, train,
        embed_features=self.embed_features, dropout_rate=self.dropout_rate,
        dtype=self.dtype)
    aux = {k: v.astype(jnp.float32) for k, v in aux.items()}
    return logits, {**aux, **head_aux}


class PooledHead(nn.Module):
  """The ClassBlock on one (B, D) globally pooled vector, which is `seq5`
  (ResNet-50, HRNet with its ImageNet head): aux has no seq1..seq4."""
  num_classes: int
  embed_features: int = EMBED_FEATURES
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits, aux = class_block(
        pooled, self.num_classes, train, embed_features=self.embed_features,
        dropout_rate=self.dropout_rate, dtype=self.dtype)
    return logits, {"seq5": pooled.astype(jnp.float32), **aux}
