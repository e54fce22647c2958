"""Where a training step's time goes: per-layer-kind micro-programs.

Used by `scripts/benchmark_train.py`: every convolution and BatchNorm of the
model is found by tracing it abstractly (a flax method interceptor under
`jax.eval_shape`), and each distinct shape is timed as an isolated program in
JAX (forward, input gradient, weight gradient, and the weight gradient via
`fast_conv`'s shifted GEMMs) and in PyTorch (conv2d, conv2d_input,
conv2d_weight, batch_norm). The sums over the model's layers say which kind
of work costs what; micro-programs run without the whole step's fusion and
scheduling, so "other" (= step - sums) is an estimate.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import linen as nn

from pshrnet_jax.models import fast_conv
from pshrnet_jax.models import layers


def min_ms(fn, repeats):
  """Best wall time of `fn()` in ms over `repeats` calls after one warm-up.

  The minimum, not the median: on a shared 2-core machine a call is often
  pre-empted, and the minimum is the figure that repeats across runs.
  """
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return 1e3 * min(times)


def layer_records(model, variables, x_shape, train_mode):
  """(kind, input shape, kernel, features, stride, padding) of every conv/BN.

  Read by tracing the model abstractly (jax.eval_shape) under a flax
  method interceptor, so the shapes are the model's own.
  """
  records = []

  def record(next_fun, args, kwargs, context):
    m, x = context.module, args[0] if args else None
    if context.method_name == "__call__" and type(m) is nn.Conv:
      records.append(("conv", tuple(x.shape), tuple(m.kernel_size),
                      m.features, tuple(m.strides), tuple(m.padding)))
    elif context.method_name == "__call__" and isinstance(
        m, layers.BatchNorm) and x is not None:
      records.append(("bn", tuple(x.shape)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(
        v, x, train=train_mode, mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(0)}), variables,
                   jax.ShapeDtypeStruct(x_shape, jnp.float32))
  return records


def _conv_times(rec, repeats):
  """Median ms of JAX fwd, d/dx, d/dw, fast d/dw and torch fwd, dx, dw."""
  _, shape, kernel, out, stride, padding = rec
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), kernel + (shape[-1], out)) * 0.1
  conv = lambda x_, w_: jax.lax.conv_general_dilated(
      x_, w_, stride, padding, dimension_numbers=fast_conv.DIMENSION_NUMBERS)
  g = jnp.ones(jax.eval_shape(conv, x, w).shape)
  progs = {"fwd": (jax.jit(conv), (x, w)),
           "dx": (jax.jit(lambda x_, w_, g_: jax.vjp(
               lambda a: conv(a, w_), x_)[1](g_)[0]), (x, w, g)),
           "dw": (jax.jit(lambda x_, w_, g_: jax.vjp(
               lambda b: conv(x_, b), w_)[1](g_)[0]), (x, w, g)),
           "dw_shifted": (jax.jit(lambda x_, w_, g_: jax.vjp(
               lambda b: fast_conv.conv2d(x_, b, stride, padding,
                                          weight_grad="shifted"), w_)[1](
                                              g_)[0]), (x, w, g))}
  res = {k: min_ms(lambda f=f, a=a: f(*a).block_until_ready(), repeats)
         for k, (f, a) in progs.items()}
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
  wt = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous()
  gt = torch.from_numpy(np.array(g)).permute(0, 3, 1, 2).contiguous()
  pad = padding[0][0]
  with torch.no_grad():
    res["t_fwd"] = min_ms(lambda: F.conv2d(xt, wt, None, stride, pad),
                              repeats)
    res["t_dx"] = min_ms(lambda: torch.nn.grad.conv2d_input(
        xt.shape, wt, gt, stride, pad), repeats)
    res["t_dw"] = min_ms(lambda: torch.nn.grad.conv2d_weight(
        xt, wt.shape, gt, stride, pad), repeats)
  return res


def _bn_times(shape, train_mode, repeats):
  """Median ms of BN forward and backward (fwd+bwd - fwd), JAX and torch."""
  bn = layers.BatchNorm(use_running_average=not train_mode)
  x = jax.random.normal(jax.random.key(0), shape)
  v = bn.init(jax.random.key(1), x)
  apply = lambda p, x_: bn.apply({"params": p, "batch_stats": v[
      "batch_stats"]}, x_, mutable=["batch_stats"])[0]
  fwd = jax.jit(apply)
  both = jax.jit(lambda p, x_: jax.vjp(apply, p, x_)[1](jnp.ones(shape)))
  res = {"fwd": min_ms(lambda: fwd(v["params"], x).block_until_ready(),
                           repeats)}
  res["bwd"] = (min_ms(lambda: jax.block_until_ready(
      both(v["params"], x)), repeats) - res["fwd"]) if train_mode else 0.0
  xt = torch.from_numpy(np.array(x))
  if xt.ndim == 4:  # BatchNorm2d; the head's BatchNorm1d is (B, C) already
    xt = xt.permute(0, 3, 1, 2).contiguous()
  c = shape[-1]
  params = [torch.ones(c, requires_grad=True), torch.zeros(
      c, requires_grad=True)]
  stats = [torch.zeros(c), torch.ones(c)]
  run = lambda x_: F.batch_norm(x_, *stats, *params, training=train_mode)
  with torch.no_grad():
    res["t_fwd"] = min_ms(lambda: run(xt), repeats)
  if train_mode:
    xg = xt.clone().requires_grad_(True)
    res["t_bwd"] = min_ms(lambda: run(xg).sum().backward(),
                              repeats) - res["t_fwd"]
  else:
    res["t_bwd"] = 0.0
  return res


def breakdown(phase, jres, args):
  """Sums of micro-program times over the model's convs and BNs."""
  b = args.p * args.k
  shape = (b, *args.image_size, 3)
  recs = [(r, True, i == 0) for i, r in enumerate(layer_records(
      jres["model"], jres["variables"], shape, True))]
  if phase == 2:  # the frozen teacher: forward only, eval-mode BN
    recs += [(r, False, False) for r in layer_records(
        jres["teacher"], jres["teacher_variables"], shape, False)]
  counts = {}
  for rec, trained, first in recs:
    key = (rec, trained, first)
    counts[key] = counts.get(key, 0) + 1
  totals = {k: [0.0, 0.0] for k in ("conv forward", "conv input-grad",
                                    "conv weight-grad", "BN forward",
                                    "BN backward")}
  fast_dw, per_conv, cache = 0.0, [], {}
  for (rec, trained, first), n in counts.items():
    if rec[0] == "conv":
      if rec not in cache:
        cache[rec] = _conv_times(rec, args.micro_repeats)
      t = cache[rec]
      totals["conv forward"][0] += n * t["fwd"]
      totals["conv forward"][1] += n * t["t_fwd"]
      if trained:
        if not first:  # the image itself needs no gradient
          totals["conv input-grad"][0] += n * t["dx"]
          totals["conv input-grad"][1] += n * t["t_dx"]
        totals["conv weight-grad"][0] += n * t["dw"]
        totals["conv weight-grad"][1] += n * t["t_dw"]
        # fast_conv's 'auto': shifted GEMMs for 1x1, XLA's program for kxk.
        fast_dw += n * t["dw_shifted" if rec[2] == (1, 1) else "dw"]
        per_conv.append((n, rec, t))
    else:
      t = _bn_times(rec[1], trained, args.micro_repeats)
      totals["BN forward"][0] += n * t["fwd"]
      totals["BN forward"][1] += n * t["t_fwd"]
      totals["BN backward"][0] += n * t["bwd"]
      totals["BN backward"][1] += n * t["t_bwd"]
  return totals, fast_dw, per_conv, len(recs)


# ------------------------------------------------------------------ report
