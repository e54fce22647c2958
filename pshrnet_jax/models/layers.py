"""Building blocks shared by the HRNet, VDSR-CA and ReID modules.

Every default here is PyTorch's, set explicitly, because the weights these
modules run come from PyTorch checkpoints and parity tests compare against
PyTorch: BatchNorm momentum 0.9 (PyTorch 0.1), epsilon 1e-5 and PyTorch's
unbiased running-variance update, convolutions without bias, and symmetric
padding k // 2 on every side (Flax's 'SAME' pads a stride-2 3x3 convolution
asymmetrically, which shifts every later map by half a pixel relative to
PyTorch).
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
  """A PyTorch-equivalent Conv2d(padding=kernel_size // 2) in NHWC.

  Args:
    features: output channels.
    kernel_size: square kernel size.
    stride: square stride.
    use_bias: whether the convolution has a bias (HRNet's are bias-free).
    dtype: computation dtype; parameters stay float32.
    name: module name.
    kernel_init: the kernel's initialiser (HRNet/VDSR's law by default).

  Returns:
    The `nn.Conv` module.
  """
  pad = kernel_size // 2
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
      param_dtype=jnp.float32, kernel_init=kernel_init, name=name)


class BatchNorm(nn.Module):
  """BatchNorm with PyTorch's semantics (BatchNorm1d/2d over the last axis).

  Flax's `nn.BatchNorm` updates the running variance with the biased batch
  variance; PyTorch uses the unbiased one (n / (n - 1)). For the ReID head's
  BatchNorm1d, n is the batch size (24), a 4% difference in every update, so
  the running statistics of a model trained here would drift from PyTorch's.
  Normalisation itself uses the biased variance, as in PyTorch. Variable
  names match `nn.BatchNorm` (params scale/bias, batch_stats mean/var).

  Attributes:
    use_running_average: normalise with the running statistics (eval).
    momentum: running-average decay (0.9 == PyTorch momentum 0.1).
    epsilon: added to the variance (PyTorch: 1e-5).
    dtype: computation dtype of the output; statistics are float32.
    scale_init: initialiser of the scale.
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
  """BatchNorm with PyTorch's defaults (momentum 0.1 == Flax 0.9, eps 1e-5).

  Args:
    train: batch statistics (True) or running averages (False).
    dtype: computation dtype; parameters and statistics stay float32.
    name: module name.

  Returns:
    The `BatchNorm` module.
  """
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                   dtype=dtype, name=name)


class ConvBN(nn.Module):
  """Conv (bias-free unless asked) + BatchNorm + optional ReLU.

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    stride: square stride.
    relu: apply a ReLU after the BatchNorm.
    use_bias: convolution bias (the ImageNet head's convolutions have one).
    dtype: computation dtype.
  """
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
  """HRNet's BasicBlock (expansion 1): two 3x3 conv-BN with identity skip.

  HRNet only builds it with matching channels and stride 1, so it has no
  downsample path; asking for another configuration is an error.

  Attributes:
    features: channels in and out.
    dtype: computation dtype.
  """
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
  """ResNet/HRNet Bottleneck (expansion 4), downsample path when needed.

  Parameter names follow PyTorch's (`conv1..3`, `bn1..3`); the 1x1
  projection `downsample.0/1` becomes `downsample_conv` / `downsample_bn`.

  Attributes:
    planes: bottleneck width; the output has `4 * planes` channels.
    stride: stride of the 3x3 convolution (and of the projection).
    dtype: computation dtype.
  """
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
  """x, computed once and kept: XLA may not fuse its computation into
  later operations.

  A residual block's output is the input of the next block's convolution
  and of its skip connection. Without a fence XLA:CPU recomputes such
  elementwise chains (BatchNorm, skip add, ReLU of every earlier block of a
  branch) inside each consumer fusion, in the backward pass inside the
  transposes around each weight gradient: at HRNet-W32's depth that
  recomputation made the phase-1 step 3x slower (README, "Where a step's
  time goes"). The value is unchanged; only where it is computed.
  """
  return jax.lax.optimization_barrier(x)


def compiler_options() -> dict[str, str] | None:
  """XLA options for every jitted program that runs these models.

  XLA:CPU removes optimisation barriers (`cse_barrier_expander`) before it
  fuses, so `materialize` holds only when that pass is off. Pass the result
  as `jax.jit(..., compiler_options=layers.compiler_options())`; it is part
  of the persistent cache key. Other backends keep their defaults.
  """
  if jax.default_backend() == "cpu":
    return {"xla_disable_hlo_passes": "cse_barrier_expander"}
  return None


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  """Nearest-neighbour upsampling by an integer factor (torch 'nearest').

  Args:
    x: (B, H, W, C).
    factor: integer scale.

  Returns:
    (B, H * factor, W * factor, C).
  """
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
