"""Building blocks of the networks, with PyTorch's defaults set explicitly
(the weights come from PyTorch): BatchNorm momentum 0.9 (PyTorch 0.1), eps
1e-5, unbiased running variance; bias-free convolutions padded k // 2 on
every side (Flax's 'SAME' pads a stride-2 conv asymmetrically, shifting
every later map by half a pixel).
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Kaiming-normal, fan-out, ReLU gain: the official HRNet initialisation, and
# for 3x3 convolutions the same law as VDSR's N(0, sqrt(2 / (k * k * out))).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default Conv2d weight law, kaiming-uniform(a=sqrt(5)), i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): what the SRCNN and RCAN reference
# implementations train from. RCAN needs it: with the kaiming-normal law
# above, each of its 200 residual blocks grows the activations ~1.5x.
torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")


def conv(features: int, kernel_size: int, stride: int = 1, *,
         use_bias: bool = False, dtype: Dtype = jnp.float32,
         name: str | None = None,
         kernel_init: Callable[..., jax.Array] = conv_kernel_init) -> nn.Conv:
  """PyTorch's Conv2d(padding=kernel_size // 2), NHWC, float32 parameters."""
  pad = kernel_size // 2
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
      param_dtype=jnp.float32, kernel_init=kernel_init, name=name)


class BatchNorm(nn.Module):
  """BatchNorm with PyTorch's semantics over the last axis, `nn.BatchNorm`'s
  variable names. Unlike Flax's, the running variance is updated with the
  unbiased batch variance (n / (n - 1): 4% per update for the ReID head's
  BatchNorm1d over 24 rows); normalisation uses the biased one, as PyTorch.
  Statistics are float32; `momentum` 0.9 is PyTorch's 0.1.
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  scale_init: Callable[..., jax.Array] = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,),
                            jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,),
                           jnp.float32)
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        n = x.size // features
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = (self.momentum * ra_mean.value
                         + (1 - self.momentum) * mean)
        ra_var.value = (self.momentum * ra_var.value
                        + (1 - self.momentum) * unbiased)
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    y = x.astype(jnp.float32) * mul + (bias - mean * mul)
    return y.astype(self.dtype)


def batch_norm(train: bool, *, dtype: Dtype = jnp.float32,
               name: str | None = None) -> BatchNorm:
  """`BatchNorm` with PyTorch's defaults, batch statistics when `train`."""
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                   dtype=dtype, name=name)


class ConvBN(nn.Module):
  """Conv (bias-free unless `use_bias`) + BatchNorm + optional ReLU."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  relu: bool = True
  use_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = conv(self.features, self.kernel_size, self.stride,
             use_bias=self.use_bias, dtype=self.dtype, name="conv")(x)
    x = batch_norm(train, dtype=self.dtype, name="bn")(x)
    return nn.relu(x) if self.relu else x


class BasicBlock(nn.Module):
  """HRNet's BasicBlock: two 3x3 conv-BN with an identity skip (`features`
  in and out, stride 1: HRNet needs no downsample path)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.shape[-1] != self.features:
      raise ValueError(
          f"BasicBlock {self.name}: input has {x.shape[-1]} channels, "
          f"expected {self.features} (HRNet branches keep their width)")
    y = conv(self.features, 3, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(y))
    y = conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    y = batch_norm(train, dtype=self.dtype, name="bn2")(y)
    return materialize(nn.relu(y + x))


class Bottleneck(nn.Module):
  """ResNet/HRNet Bottleneck: 4 * `planes` channels out, `stride` on the
  3x3 convolution and the projection (`downsample_conv` / `_bn`) if needed."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    out_features = self.planes * self.expansion
    dtype = self.dtype
    y = conv(self.planes, 1, dtype=dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, dtype=dtype, name="bn1")(y))
    y = conv(self.planes, 3, self.stride, dtype=dtype, name="conv2")(y)
    y = nn.relu(batch_norm(train, dtype=dtype, name="bn2")(y))
    y = conv(out_features, 1, dtype=dtype, name="conv3")(y)
    y = batch_norm(train, dtype=dtype, name="bn3")(y)
    if self.stride != 1 or x.shape[-1] != out_features:
      x = conv(out_features, 1, self.stride, dtype=dtype,
               name="downsample_conv")(x)
      x = batch_norm(train, dtype=self.dtype, name="downsample_bn")(x)
    return materialize(nn.relu(y + x))


def materialize(x: jax.Array) -> jax.Array:
  """x, computed once and kept: XLA may not fuse its computation into later
  operations. Without this fence on block outputs XLA:CPU recomputes the
  elementwise chains of every earlier block (BatchNorm, skip add, ReLU)
  inside each consumer fusion, forward and backward: at HRNet-W32's depth
  the phase-1 step ran 3x slower (README, "Where a step's time goes").
  """
  return jax.lax.optimization_barrier(x)


def compiler_options() -> dict[str, str] | None:
  """`jax.jit(..., compiler_options=...)` for every program that runs these
  models: XLA:CPU removes optimisation barriers (`cse_barrier_expander`)
  before it fuses, so `materialize` holds only with that pass off."""
  if jax.default_backend() == "cpu":
    return {"xla_disable_hlo_passes": "cse_barrier_expander"}
  return None


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  """(B, H, W, C) -> (B, H * factor, W * factor, C), torch's 'nearest'."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
