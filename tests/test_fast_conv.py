"""fast_conv.conv2d: same values and gradients as lax.conv_general_dilated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from pshrnet_jax.models import fast_conv
from pshrnet_jax.models import layers

# (batch, height, width, in, out, kernel, stride, padding): HRNet's kinds of
# convolution at tiny sizes, plus odd sizes and asymmetric padding.
SHAPES = [
    (2, 8, 6, 5, 7, 3, 1, ((1, 1), (1, 1))),   # BasicBlock 3x3
    (2, 9, 7, 4, 6, 3, 2, ((1, 1), (1, 1))),   # stride-2 fuse/transition
    (3, 6, 4, 8, 12, 1, 1, ((0, 0), (0, 0))),  # Bottleneck / fuse 1x1
    (2, 7, 5, 3, 4, 1, 2, ((0, 0), (0, 0))),   # strided 1x1 projection
    (1, 6, 6, 2, 3, 3, 2, ((0, 1), (2, 0))),   # asymmetric padding
    (4, 1, 1, 6, 3, 1, 1, ((0, 0), (0, 0))),   # channel attention 1x1
]


def _reference(x, kernel, stride, padding):
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)


def _inputs(shape, seed):
  batch, height, width, cin, cout, k, _, _ = shape
  keys = jax.random.split(jax.random.key(seed), 2)
  x = jax.random.normal(keys[0], (batch, height, width, cin), jnp.float32)
  kernel = jax.random.normal(keys[1], (k, k, cin, cout), jnp.float32)
  return x, kernel


def _grads(conv_fn, x, kernel, cotangent):
  y, vjp = jax.vjp(conv_fn, x, kernel)
  return (y,) + vjp(cotangent)


def _relative(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


# 'auto' is 'shifted' on the 1x1 shapes and 'xla' on the others.
@pytest.mark.parametrize("method", ["auto", "shifted", "taps"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[5]}x{s[5]}s{s[6]}"
                         f"_{s[3]}to{s[4]}_{s[1]}x{s[2]}")
def test_values_and_gradients_match_lax_conv(shape, method):
  stride, padding = shape[6], shape[7]
  x, kernel = _inputs(shape, seed=sum(shape[:6]))
  cotangent = jax.random.normal(
      jax.random.key(7), _reference(x, kernel, stride, padding).shape)
  ref_y, ref_dx, ref_dw = _grads(
      lambda a, b: _reference(a, b, stride, padding), x, kernel, cotangent)
  y, dx, dw = jax.jit(lambda a, b, c: _grads(
      lambda a_, b_: fast_conv.conv2d(a_, b_, (stride, stride), padding,
                                      weight_grad=method), a, b, c))(
                                          x, kernel, cotangent)
  assert y.shape == ref_y.shape and dw.shape == kernel.shape
  assert _relative(y, ref_y) < 1e-4
  assert _relative(dx, ref_dx) < 1e-4
  assert _relative(dw, ref_dw) < 1e-4


@pytest.mark.parametrize("kernel_size,strides,conv_impl", [
    (1, 2, "fast"), (3, 2, "fast"), (3, 2, "gemm"), (3, 1, "gemm")])
def test_the_models_conv_matches_default(kernel_size, strides, conv_impl):
  # layers.conv, as every model builds its convolutions: same parameters,
  # same gradients as with XLA's convolution.
  default = layers.conv(5, kernel_size, strides, use_bias=True)
  fast = layers.conv(5, kernel_size, strides, use_bias=True,
                     conv_impl=conv_impl)
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 4))
  params = default.init(jax.random.key(1), x)
  loss = lambda module: lambda p, x_: jnp.sum(
      jnp.sin(module.apply(p, x_)))
  expected = jax.grad(loss(default), argnums=(0, 1))(params, x)
  got = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    assert _relative(g, e) < 1e-4
  # 'fast' takes the custom weight gradient for 1x1 kernels only (3x3 falls
  # back to lax); 'gemm' for every kernel.
  jaxpr = str(jax.make_jaxpr(fast.apply)(params, x))
  assert ("custom_vjp_call" in jaxpr) == (kernel_size == 1
                                          or conv_impl == "gemm")


def test_taps_weight_grad_by_hand():
  # 1 image, 3x2 input, one channel, 2x2 kernel, stride 1, no padding: two
  # output pixels (rows 0 and 1), so dL/dk[i, j] = g0 x[i, j] + g1 x[i+1, j].
  x = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape(1, 3, 2, 1)
  g = jnp.array([0.5, -1.0]).reshape(1, 2, 1, 1)
  dw = fast_conv.taps_weight_grad(x, g, (2, 2, 1, 1), (1, 1),
                                  ((0, 0), (0, 0)))
  np.testing.assert_array_equal(np.asarray(dw)[..., 0, 0],
                                [[0.5 - 3.0, 1.0 - 4.0], [1.5 - 5.0,
                                                          2.0 - 6.0]])


def test_shifted_weight_grad_by_hand():
  # 1 image, 2x2 input, one channel, 2x2 kernel, no padding: a single
  # output pixel y = sum(x * k), so dL/dk = g * x element-wise.
  x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
  g = jnp.full((1, 1, 1, 1), 0.5)
  dw = fast_conv.shifted_weight_grad(x, g, (2, 2, 1, 1), (1, 1),
                                     ((0, 0), (0, 0)))
  np.testing.assert_array_equal(np.asarray(dw)[..., 0, 0],
                                [[0.5, 1.0], [1.5, 2.0]])


def test_bad_input_names_the_problem():
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="3 channels"):
    fast_conv.conv2d(x, jnp.zeros((1, 1, 5, 2)))
  with pytest.raises(ValueError, match="weight_grad"):
    fast_conv.conv2d(x, jnp.zeros((1, 1, 3, 2)), weight_grad="im2col")
  with pytest.raises(ValueError, match="conv_impl"):
    layers.conv(4, 3, conv_impl="cudnn")
  with pytest.raises(ValueError, match="NHWC"):
    fast_conv.conv2d(x[0], jnp.zeros((1, 1, 3, 2)))
