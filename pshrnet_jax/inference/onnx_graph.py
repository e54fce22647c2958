"""A JAX function as an ONNX graph, over the `onnx` package's helpers.

`to_onnx(fn, input_shape, input_dtype, ...)` traces `fn` with a symbolic
batch dimension (`jax.export.symbolic_shape`), folds everything that does
not depend on the input (the weights, BatchNorm's scale and shift) into
constants at export time, and emits ONNX nodes for the rest: the primitives
of `_EMITTERS`, which are the ones these networks use (convolution, max
pooling, matmul, ReLU as max, sigmoid, sums and maxima over axes, reshapes,
transposes, flips, concatenation, slices, casts, arithmetic). Anything else
is a ConversionError naming the primitive. Only the batch dimension is
symbolic; the ONNX graph keeps JAX's NHWC layout and puts transposes around
each convolution (ONNX Runtime removes the pairs that cancel).

Needs `onnx` (`pip install '.[onnx]'`); imported on first use.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

from pshrnet_jax.errors import ConfigError
from pshrnet_jax.errors import ConversionError

OPSET = 17
INSTALL_HINT = ("pip install '.[onnx]' in a clone (the package's extra "
                "'onnx'), or pip install onnx onnxruntime")
_INT64_MIN = np.iinfo(np.int64).min


def require(module: str = "onnx"):
  """The optional module `module` (onnx, onnxruntime), or a ConfigError
  saying how to install it."""
  try:
    return __import__(module)
  except ImportError as e:
    raise ConfigError(f"ONNX export needs the {module} package ({e}): "
                      f"{INSTALL_HINT}") from None


def _symbolic(dim: Any) -> bool:
  return not isinstance(dim, (int, np.integer))


def _same_dim(a: Any, b: Any) -> bool:
  return _symbolic(a) == _symbolic(b) and str(a) == str(b)


class _Name(str):
  """The name of an ONNX value computed at run time (not a constant)."""


class _Graph:
  """Nodes and initializers under construction; JAX variables -> names."""

  def __init__(self, onnx):
    self.onnx = onnx
    self.nodes, self.initializers = [], []
    self._constants: dict[int, tuple[np.ndarray, str]] = {}
    self._count = 0

  def fresh(self, hint: str) -> str:
    self._count += 1
    return f"{hint}_{self._count}"

  def node(self, op: str, inputs: Sequence[str], outputs: int = 1,
           **attrs) -> list[_Name]:
    names = [_Name(self.fresh(op.lower())) for _ in range(outputs)]
    self.nodes.append(self.onnx.helper.make_node(op, list(inputs), names,
                                                 **attrs))
    return names

  def one(self, op: str, inputs: Sequence[str], **attrs) -> _Name:
    return self.node(op, inputs, **attrs)[0]

  def const(self, value: Any, dtype: Any = None) -> str:
    """A new initializer holding `value`."""
    name = self.fresh("const")
    array = np.asarray(value, dtype=dtype)
    self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
    return name

  def ref(self, x: Any) -> str:
    """The ONNX name of an operand: a run-time value's own, or one
    initializer per constant array."""
    if isinstance(x, _Name):
      return x
    if id(x) not in self._constants:
      self._constants[id(x)] = (x, self.const(x))  # Keeps x alive.
    return self._constants[id(x)][1]

  def refs(self, xs: Sequence[Any]) -> list[str]:
    return [self.ref(x) for x in xs]


def _shape_for_reshape(in_shape, out_shape) -> list[int]:
  """ONNX Reshape's shape: a symbolic dim is 0 (copy the input's) where the
  input has it at the same place, else -1 (at most one)."""
  dims = [int(d) if not _symbolic(d)
          else 0 if i < len(in_shape) and _same_dim(in_shape[i], d) else -1
          for i, d in enumerate(out_shape)]
  if dims.count(-1) > 1:
    raise ConversionError(f"cannot reshape {in_shape} to {out_shape} in "
                          "ONNX: more than one symbolic dimension moves")
  return dims


def _static_shape(shape) -> list[int]:
  """`shape` with its symbolic dims as 1 (ONNX broadcasting fills them)."""
  return [1 if _symbolic(d) else int(d) for d in shape]


def _inverse(perm: Sequence[int]) -> list[int]:
  return [int(i) for i in np.argsort(perm)]


# --- One emitter per primitive: (graph, eqn, operands) -> output names;
# an operand is a run-time value (_Name) or a constant (np.ndarray). ---

def _elementwise(op: str) -> Callable[..., list[str]]:
  return lambda g, eqn, xs: g.node(op, g.refs(xs))


def _rsqrt(g, eqn, xs):
  return [g.one("Reciprocal", [g.one("Sqrt", g.refs(xs))])]


def _convert(g, eqn, xs):
  to = g.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(eqn.params["new_dtype"]))
  return g.node("Cast", g.refs(xs), to=to)


def _identity(g, eqn, xs):
  return [g.one("Identity", [name]) for name in g.refs(xs)]


def _reshape(g, eqn, xs):
  if eqn.params.get("dimensions") is not None:
    raise ConversionError("reshape with `dimensions` has no ONNX emitter")
  shape = _shape_for_reshape(eqn.invars[0].aval.shape,
                             eqn.params["new_sizes"])
  return g.node("Reshape", [g.ref(xs[0]), g.const(shape, np.int64)])


def _broadcast_in_dim(g, eqn, xs):
  dims = list(eqn.params["broadcast_dimensions"])
  out_shape = eqn.outvars[0].aval.shape
  if dims != sorted(dims):
    raise ConversionError(f"broadcast_in_dim with dimensions {dims} out of "
                          "order has no ONNX emitter")
  new_axes = [i for i in range(len(out_shape)) if i not in dims]
  x = g.ref(xs[0])
  if new_axes:
    x = g.one("Unsqueeze", [x, g.const(new_axes, np.int64)])
  return g.node("Expand", [x, g.const(_static_shape(out_shape), np.int64)])


def _transpose(g, eqn, xs):
  return g.node("Transpose", g.refs(xs),
                perm=[int(p) for p in eqn.params["permutation"]])


def _squeeze(g, eqn, xs):
  return g.node("Squeeze", [g.ref(xs[0]), g.const(eqn.params["dimensions"],
                                            np.int64)])


def _concatenate(g, eqn, xs):
  return g.node("Concat", g.refs(xs), axis=int(eqn.params["dimension"]))


def _rev(g, eqn, xs):
  axes = [int(a) for a in eqn.params["dimensions"]]
  n = len(axes)
  return g.node("Slice", [g.ref(xs[0]), g.const([-1] * n, np.int64),
                          g.const([_INT64_MIN] * n, np.int64),
                          g.const(axes, np.int64),
                          g.const([-1] * n, np.int64)])


def _slice(g, eqn, xs):
  shape = eqn.invars[0].aval.shape
  strides = eqn.params["strides"] or [1] * len(shape)
  starts, ends, axes, steps = [], [], [], []
  for axis, (lo, hi, step, size) in enumerate(zip(
      eqn.params["start_indices"], eqn.params["limit_indices"], strides,
      shape)):
    if _symbolic(size) or _symbolic(lo) or _symbolic(hi):
      if not (lo == 0 and _same_dim(hi, size) and step == 1):
        raise ConversionError("a slice along the symbolic batch dimension "
                              "has no ONNX emitter")
      continue
    if (lo, hi, step) != (0, size, 1):
      starts.append(lo), ends.append(hi), axes.append(axis)
      steps.append(step)
  if not axes:
    return [g.one("Identity", [g.ref(xs[0])])]
  return g.node("Slice", [g.ref(xs[0])] + [g.const(v, np.int64)
                                     for v in (starts, ends, axes, steps)])


def _reduce(op: str, axes_as_input: bool):
  def emit(g, eqn, xs):
    axes = [int(a) for a in eqn.params["axes"]]
    if axes_as_input:
      return g.node(op, [g.ref(xs[0]), g.const(axes, np.int64)], keepdims=0)
    return g.node(op, [g.ref(xs[0])], axes=axes, keepdims=0)
  return emit


def _dot_general(g, eqn, xs):
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lhs, rhs = (v.aval for v in eqn.invars)
  if lb or rb or rhs.ndim != 2 or tuple(lc) != (lhs.ndim - 1,):
    raise ConversionError(f"dot_general {eqn.params['dimension_numbers']} "
                          "has no ONNX emitter (only x @ W)")
  w = xs[1] if tuple(rc) == (0,) else g.one("Transpose", [g.ref(xs[1])],
                                             perm=[1, 0])
  return g.node("MatMul", [g.ref(xs[0]), g.ref(w)])


def _conv(g, eqn, xs):
  p = eqn.params
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
    raise ConversionError("a transposed or batch-grouped convolution has no "
                          "ONNX emitter")
  pads = [int(lo) for lo, _ in p["padding"]] + [int(hi)
                                                for _, hi in p["padding"]]
  x = g.one("Transpose", [g.ref(xs[0])], perm=list(lhs_spec))
  kernel = xs[1]
  w = (g.const(np.transpose(kernel, rhs_spec))
       if isinstance(kernel, np.ndarray)
       else g.one("Transpose", [kernel], perm=list(rhs_spec)))
  y = g.one("Conv", [x, w], strides=list(p["window_strides"]), pads=pads,
            dilations=list(p["rhs_dilation"]),
            group=int(p["feature_group_count"]))
  return g.node("Transpose", [y], perm=_inverse(out_spec))


def _max_pool(g, eqn, xs):
  p = eqn.params
  window, strides = p["window_dimensions"], p["window_strides"]
  if (len(window) != 4 or window[0] != 1 or window[3] != 1
      or strides[0] != 1 or strides[3] != 1
      or any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"]))):
    raise ConversionError(f"reduce_window_max {window} / {strides} has no "
                          "ONNX emitter (only NHWC spatial max pooling)")
  padding = p["padding"][1:3]
  x = g.one("Transpose", [g.ref(xs[0])], perm=[0, 3, 1, 2])
  y = g.one("MaxPool", [x], kernel_shape=list(window[1:3]),
            strides=list(strides[1:3]),
            pads=[lo for lo, _ in padding] + [hi for _, hi in padding])
  return g.node("Transpose", [y], perm=[0, 2, 3, 1])


_EMITTERS: dict[str, Callable[..., list[str]]] = {
    "add": _elementwise("Add"), "sub": _elementwise("Sub"),
    "mul": _elementwise("Mul"), "div": _elementwise("Div"),
    "max": _elementwise("Max"), "min": _elementwise("Min"),
    "neg": _elementwise("Neg"), "sqrt": _elementwise("Sqrt"),
    "logistic": _elementwise("Sigmoid"), "exp": _elementwise("Exp"),
    "rsqrt": _rsqrt, "convert_element_type": _convert,
    "optimization_barrier": _identity, "copy": _identity,
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim, "transpose": _transpose,
    "squeeze": _squeeze, "concatenate": _concatenate, "rev": _rev,
    "slice": _slice, "reduce_sum": _reduce("ReduceSum", True),
    "reduce_max": _reduce("ReduceMax", False),
    "dot_general": _dot_general, "conv_general_dilated": _conv,
    "reduce_window_max": _max_pool,
}
# Primitives that call an inner jaxpr: converted inline.
_INNER_JAXPR = {"jit": "jaxpr", "pjit": "jaxpr", "custom_jvp_call": "call_jaxpr",
                "custom_vjp_call": "call_jaxpr", "remat": "jaxpr",
                "checkpoint": "jaxpr"}


def _inner(eqn) -> jcore.ClosedJaxpr | None:
  key = _INNER_JAXPR.get(eqn.primitive.name)
  inner = eqn.params.get(key) if key else None
  if isinstance(inner, jcore.Jaxpr):
    inner = jcore.ClosedJaxpr(inner, ())
  return inner


def _where(eqn) -> str:
  """'; at file:line (function)' of the user code behind `eqn`, if known."""
  try:
    from jax._src import source_info_util  # pylint: disable=g-import-not-at-top
    return f"; at {source_info_util.summarize(eqn.source_info)}"
  except (ImportError, AttributeError):
    return ""


def _foldable(eqn) -> bool:
  return not any(_symbolic(d) for v in eqn.outvars for d in v.aval.shape)


def _convert_jaxpr(g: _Graph, closed: jcore.ClosedJaxpr,
                   args: Sequence[Any]) -> list[Any]:
  """Emits `closed` applied to `args` (operands: run-time values or
  constants); returns its outputs as operands."""
  env: dict[Any, Any] = {}

  def read(atom):
    if isinstance(atom, jcore.Literal):
      return np.asarray(atom.val, dtype=atom.aval.dtype)
    return env[atom]

  for var, value in zip(closed.jaxpr.constvars, closed.consts):
    env[var] = np.asarray(value)
  for var, arg in zip(closed.jaxpr.invars, args):
    env[var] = arg
  for eqn in closed.jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    inner = _inner(eqn)
    if inner is not None:
      outs = _convert_jaxpr(g, inner, values)
    elif all(isinstance(v, np.ndarray) for v in values) and _foldable(eqn):
      result = eqn.primitive.bind(*values, **eqn.params)
      outs = ([np.asarray(r) for r in result] if eqn.primitive.multiple_results
              else [np.asarray(result)])
    else:
      emit = _EMITTERS.get(eqn.primitive.name)
      if emit is None:
        raise ConversionError(
            f"the JAX primitive {eqn.primitive.name!r} has no ONNX emitter "
            f"(pshrnet_jax/inference/onnx_graph.py){_where(eqn)}")
      outs = emit(g, eqn, values)
    for var, out in zip(eqn.outvars, outs):
      env[var] = out
  return [read(v) for v in closed.jaxpr.outvars]


def to_onnx(fn: Callable[..., Any], input_shape: Sequence[int], input_dtype,
            *, input_name: str, output_names: Sequence[str],
            batch_name: str = "batch", doc: str = ""):
  """`fn(x)` for x of shape (batch, *input_shape) as an ONNX ModelProto
  (opset OPSET), the batch dimension free; outputs named `output_names`.

  Raises:
    ConfigError: onnx is not installed.
    ConversionError: `fn` uses a primitive without an emitter.
  """
  onnx = require("onnx")
  spec = jax.ShapeDtypeStruct(
      jax.export.symbolic_shape(
          ", ".join([batch_name] + [str(int(d)) for d in input_shape])),
      input_dtype)
  closed = jax.make_jaxpr(fn)(spec)
  g = _Graph(onnx)
  outs = _convert_jaxpr(g, closed, [_Name(input_name)])
  helper = onnx.helper

  def info(name, aval):
    shape = [str(d) if _symbolic(d) else int(d) for d in aval.shape]
    dtype = helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype))
    return helper.make_tensor_value_info(name, dtype, shape)

  for out, name in zip(outs, output_names):
    g.nodes.append(helper.make_node("Identity", [g.ref(out)], [name]))
  graph = helper.make_graph(
      g.nodes, "pshrnet_jax", [info(input_name, spec)],
      [info(name, v.aval) for name, v in zip(output_names,
                                             closed.jaxpr.outvars)],
      initializer=g.initializers)
  model = helper.make_model(graph, opset_imports=[
      helper.make_opsetid("", OPSET)], producer_name="pshrnet_jax",
                            doc_string=doc)
  model.ir_version = 8  # ONNX Runtime 1.14+ read it; opset 17 needs >= 8.
  onnx.checker.check_model(model)
  return model
