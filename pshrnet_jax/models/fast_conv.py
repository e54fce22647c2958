"""A 2-D convolution whose weight gradient is computed as matrix products.

XLA:CPU lowers the weight gradient of a convolution to a convolution with
batch and feature dimensions swapped, wrapped in transposes of the
activations. `conv2d` keeps XLA's forward pass and input gradient and
replaces the weight gradient with GEMMs over NHWC data:

  dW[i, j, c, o] = sum_{b, h, w} x_pad[b, s*h + i, s*w + j, c] * g[b, h, w, o]

Methods (`weight_grad`):
  'shifted': one GEMM per kernel tap over a shifted, strided view of x (for
    a 1x1 kernel: a single GEMM over the B*H*W rows of x and g);
  'taps': one GEMM per row phase: the horizontal taps of x side by side on
    its channel axis and the vertical taps as shifted copies of g
    (`taps_weight_grad`); one GEMM for a stride-1 3x3 kernel, two for
    stride 2;
  'xla': XLA's own program;
  'auto': 'shifted' for 1x1 kernels, 'xla' otherwise.

What each gives on this project's CPU is measured in README ("Training
step"); the models choose through `config.model.conv_impl` (layers.py).

Layouts follow flax.linen.Conv: x NHWC, kernel HWIO, explicit padding.
`conv_general_dilated` has lax's signature, so a Flax layer takes it as is:

  nn.Conv(..., conv_general_dilated=fast_conv.conv_general_dilated)

(parameters and their paths are unchanged); anything it does not handle
(dilation, feature groups, other layouts, an explicit precision) goes to
lax.conv_general_dilated untouched.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
WEIGHT_GRAD_METHODS = ("auto", "xla", "shifted", "taps")

Padding = tuple[tuple[int, int], tuple[int, int]]


def _check(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
           padding: Sequence[Sequence[int]]) -> tuple[tuple[int, int], Padding]:
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects x NHWC and kernel HWIO (4-D each); got "
                     f"x {x.shape} and kernel {kernel.shape}")
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"conv2d: x has {x.shape[-1]} channels but the kernel "
                     f"{kernel.shape} expects {kernel.shape[2]}")
  strides = tuple(int(s) for s in strides)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  if len(strides) != 2 or len(padding) != 2 or any(len(p) != 2
                                                   for p in padding):
    raise ValueError(f"conv2d: strides must be (sh, sw) and padding "
                     f"((top, bottom), (left, right)); got {strides}, "
                     f"{padding}")
  return strides, padding  # type: ignore[return-value]


def _xla_conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=DIMENSION_NUMBERS)


def shifted_weight_grad(x: jax.Array, g: jax.Array,
                        kernel_shape: Sequence[int], strides: Sequence[int],
                        padding: Sequence[Sequence[int]]) -> jax.Array:
  """d(loss)/d(kernel) as kh*kw GEMMs over shifted, strided views of x.

  Args:
    x: (B, H, W, C) convolution input.
    g: (B, Ho, Wo, O) gradient of the loss w.r.t. the convolution output.
    kernel_shape: (kh, kw, C, O).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)).

  Returns:
    (kh, kw, C, O) weight gradient, in the dtype of x.
  """
  kh, kw, channels, _ = kernel_shape
  (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  batch, ho, wo = g.shape[:3]
  rows = []
  for i in range(kh):
    cols = []
    for j in range(kw):
      view = lax.slice(xp, (0, i, j, 0),
                       (batch, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1,
                        channels), (1, sh, sw, 1))
      cols.append(jnp.einsum("bhwc,bhwo->co", view, g))
    rows.append(jnp.stack(cols))
  return jnp.stack(rows).astype(x.dtype)


def taps_weight_grad(x: jax.Array, g: jax.Array,
                     kernel_shape: Sequence[int], strides: Sequence[int],
                     padding: Sequence[Sequence[int]]) -> jax.Array:
  """d(loss)/d(kernel) as one GEMM per row phase, NHWC throughout.

  The kw horizontal taps of x go side by side on the channel axis
  (x_w: (B, Hp, Wo, kw*C)); the vertical taps become shifted copies of g
  on its channel axis (g_h: (B, Hp', Wo, n*O), zero rows where a shift
  runs off the map). Then

    x_w^T g_h = [dW[i, j]]_{j, i}       ((kw*C) x (n*O) blocks)

  With stride sh the rows of x_w split into sh phases (rows r, r + sh,
  ...); tap i belongs to phase i % sh at shift i // sh, so a stride-2 3x3
  kernel is two GEMMs (taps {0, 2} and {1}). No transposes of the
  activations, kh / sh times fewer copies than im2col.

  Args:
    x: (B, H, W, C) convolution input.
    g: (B, Ho, Wo, O) gradient of the loss w.r.t. the convolution output.
    kernel_shape: (kh, kw, C, O).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)).

  Returns:
    (kh, kw, C, O) weight gradient, in the dtype of x.
  """
  kh, kw, channels, out = kernel_shape
  (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  batch, ho, wo = g.shape[:3]
  hp = xp.shape[1]
  cols = [lax.slice(xp, (0, 0, j, 0), (batch, hp, j + sw * (wo - 1) + 1,
                                       channels), (1, 1, sw, 1))
          for j in range(kw)]
  x_w = jnp.concatenate(cols, axis=-1) if kw > 1 else cols[0]
  rows: list[Any] = [None] * kh
  for phase in range(min(sh, kh)):
    taps = list(range(phase, kh, sh))
    x_r = x_w[:, phase::sh]
    height = x_r.shape[1]
    shifted = [jnp.pad(g, ((0, 0), (i // sh, height - ho - i // sh),
                           (0, 0), (0, 0))) for i in taps]
    g_h = jnp.concatenate(shifted, axis=-1) if len(taps) > 1 else shifted[0]
    block = jnp.einsum("bhwk,bhwn->kn", x_r, g_h)
    block = block.reshape(kw, channels, len(taps), out)
    for t, i in enumerate(taps):
      rows[i] = block[:, :, t]
  return jnp.stack(rows).astype(x.dtype)


def _weight_grad_method(kernel_shape: Sequence[int], method: str) -> str:
  if method == "auto":
    return "shifted" if tuple(kernel_shape[:2]) == (1, 1) else "xla"
  return method


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, strides, padding, method):
  return _xla_conv(x, kernel, strides, padding)


def _conv_fwd(x, kernel, strides, padding, method):
  return _xla_conv(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, method, residuals, g):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x_: _xla_conv(x_, kernel, strides, padding), x)
  (dx,) = input_vjp(g)
  resolved = _weight_grad_method(kernel.shape, method)
  if resolved == "shifted":
    dw = shifted_weight_grad(x, g, kernel.shape, strides, padding)
  elif resolved == "taps":
    dw = taps_weight_grad(x, g, kernel.shape, strides, padding)
  else:
    _, kernel_vjp = jax.vjp(lambda k: _xla_conv(x, k, strides, padding),
                            kernel)
    (dw,) = kernel_vjp(g)
  return dx, dw.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Sequence[Sequence[int]] = ((0, 0), (0, 0)),
           weight_grad: str = "auto") -> jax.Array:
  """lax.conv_general_dilated (NHWC, HWIO) with a cheaper weight gradient.

  The forward pass and the input gradient are XLA's; only d/d(kernel)
  changes (see the module docstring). No dilation, no feature groups.

  Args:
    x: (B, H, W, C) input.
    kernel: (kh, kw, C, O) kernel.
    strides: (sh, sw).
    padding: explicit ((top, bottom), (left, right)) padding.
    weight_grad: one of WEIGHT_GRAD_METHODS (module docstring).

  Returns:
    (B, Ho, Wo, O), equal to lax.conv_general_dilated's output.
  """
  if weight_grad not in WEIGHT_GRAD_METHODS:
    raise ValueError(f"conv2d: weight_grad must be one of "
                     f"{WEIGHT_GRAD_METHODS}, got {weight_grad!r}")
  strides, padding = _check(x, kernel, strides, padding)
  return _conv(x, kernel, strides, padding, weight_grad)


_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2),
                                      rhs_spec=(3, 2, 0, 1),
                                      out_spec=(0, 3, 1, 2))


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array,
                         window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None,
                         feature_group_count: int = 1,
                         batch_group_count: int = 1,
                         precision: Any = None,
                         preferred_element_type: Any = None, *,
                         weight_grad: str = "auto") -> jax.Array:
  """Drop-in for lax.conv_general_dilated through conv2d where it applies.

  With weight_grad='auto' only 1x1 kernels take conv2d (the others would
  use XLA's program anyway); bind another method with functools.partial.

  Args:
    lhs: input, as for lax.conv_general_dilated.
    rhs: kernel.
    window_strides: strides.
    padding: explicit pairs or 'SAME' / 'VALID'.
    lhs_dilation: input dilation.
    rhs_dilation: kernel dilation.
    dimension_numbers: layouts (strings, or lax.ConvDimensionNumbers as Flax
      passes them).
    feature_group_count: feature groups.
    batch_group_count: batch groups.
    precision: matmul precision.
    preferred_element_type: accumulation/output type.
    weight_grad: conv2d's method (WEIGHT_GRAD_METHODS).

  Returns:
    The convolution, equal to lax.conv_general_dilated's.
  """
  def plain():
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type)

  if lhs.ndim != 4 or rhs.ndim != 4:
    return plain()
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                       dimension_numbers)
  ones = (None, (1, 1), [1, 1])
  if (numbers != _NHWC_HWIO
      or _weight_grad_method(rhs.shape, weight_grad) == "xla"
      or lhs_dilation not in ones or rhs_dilation not in ones
      or feature_group_count != 1 or batch_group_count != 1
      or precision is not None or preferred_element_type is not None):
    return plain()
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2],
                                  window_strides, padding)
  return conv2d(lhs, rhs, window_strides, padding, weight_grad=weight_grad)
