"""Training-step throughput of the JAX steps beside a PyTorch reference.

Usage:
  python scripts/benchmark_train.py                        # W8, 128x64, ~3 min
  python scripts/benchmark_train.py --width=32 --image_size=256,128 \
      --sr_blocks=18 --sr_features=64 --steps=3 --warmup=1  # the paper's size

For each phase it times, in one process and on the same random uint8 batch
of P x K HR/LR pairs:
  * JAX: exactly the project's step (steps.phase1_step / phase2_step through
    steps.jit_step on a 1-device mesh, optimiser from optim.make_optimizer,
    models from train.build_teacher / build_student, paper loss config):
    compile time (lower + compile) and the median step time;
  * PyTorch (CPU, eager): the reference modules of tests/torch_reference.py
    with the same losses (label-smoothed CE, batch-hard triplet over
    Seq1..Seq5, L1 SR, pseudo-siamese L1 over the paper's set) and
    torch.optim.SGD(nesterov, two LR groups, weight decay 5e-4).
Then a breakdown of where a step's time goes: forward+loss timed on its own
(JAX: a separately jitted forward; PyTorch: timestamps inside the step),
backward+update = step - forward, and per layer kind the SUM over the
model's convolutions / BatchNorms of isolated micro-programs with the
model's real shapes (one jitted program per shape and kind; torch's
conv2d / conv2d_input / conv2d_weight / batch_norm). Micro-programs run
without the fusion and scheduling of the whole step, so "other" (= step -
micro sums) is an estimate and can even be negative.

`--conv_impl=fast` traces the JAX steps with every 1x1 convolution routed
through pshrnet_jax.models.fast_conv (a GEMM weight gradient), by a
flax intercept in this script only; the models themselves are unchanged.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import linen as nn

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "tests"))

from configs import base  # pylint: disable=g-import-not-at-top
from pshrnet_jax import features  # pylint: disable=g-import-not-at-top
from pshrnet_jax import losses  # pylint: disable=g-import-not-at-top
from pshrnet_jax import optim  # pylint: disable=g-import-not-at-top
from pshrnet_jax import sharding  # pylint: disable=g-import-not-at-top
from pshrnet_jax import steps  # pylint: disable=g-import-not-at-top
from pshrnet_jax import train  # pylint: disable=g-import-not-at-top
from pshrnet_jax.models import fast_conv  # pylint: disable=g-import-not-at-top
from pshrnet_jax.models import layers  # pylint: disable=g-import-not-at-top
import torch_reference as tr  # pylint: disable=g-import-not-at-top

_POOLS = ((4, 0.5), (2, 0.2), (2, 0.2), (1, 0.2))  # SPEC 1.3 (s, lambda)


def _min_ms(fn, repeats):
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


def _load():
  return "load %.2f/%.2f/%.2f" % os.getloadavg()


def make_config(args):
  """The paper's base config with the benchmark's model sizes."""
  config = base.get_base_config("paper")
  config.model.width = args.width
  config.model.head_planes = tuple(args.head_planes or
                                   [args.width * 2**i for i in range(4)])
  config.model.sr_blocks = args.sr_blocks
  config.model.sr_features = args.sr_features
  config.data.p, config.data.k = args.p, args.k
  config.data.image_size = tuple(args.image_size)
  return config


def make_batch(args, seed=0):
  """Random uint8 HR/LR images and P identities x K pairs of labels."""
  rng = np.random.default_rng(seed)
  b = args.p * args.k
  shape = (b, *args.image_size, 3)
  ids = rng.choice(args.num_classes, args.p, replace=False)
  return {"hr": rng.integers(0, 256, shape, dtype=np.uint8),
          "lr": rng.integers(0, 256, shape, dtype=np.uint8),
          "label": np.repeat(ids, args.k).astype(np.int32)}


def _fast_1x1_interceptor(next_fun, args, kwargs, context):
  """Routes nn.Conv 1x1 calls through fast_conv.conv2d (same parameters)."""
  m = context.module
  if (type(m) is not nn.Conv or context.method_name != "__call__"
      or tuple(m.kernel_size) != (1, 1) or m.is_initializing()):
    return next_fun(*args, **kwargs)
  y = fast_conv.conv2d(args[0].astype(m.dtype),
                       m.get_variable("params", "kernel").astype(m.dtype),
                       m.strides, m.padding)
  return y + m.get_variable("params", "bias") if m.use_bias else y


# ----------------------------------------------------------------- JAX side
def random_variables(model, image_size, seed):
  """Random variables of the model's shapes, without compiling its init.

  A jitted init of HRNet costs as much compile time as a step (minutes on
  this CPU). Kernels ~ N(0, 0.5 / fan_in) (as tests/torch_reference.py's
  randomize: keeps HRNet's residual sums well-scaled), BN scale 1, biases
  and running means 0, running variances 1.
  """
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, *image_size, 3)), train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(0.5 / fan_in)
              ).astype(np.float32)
    value = 1.0 if name in ("scale", "var") else 0.0
    return np.full(leaf.shape, value, np.float32)
  return dict(jax.tree_util.tree_map_with_path(fill, dict(shapes)))


def jax_phase(phase, config, args, batch_np):
  """Compiles and times the project's jitted step; returns a result dict."""
  num_classes, size = args.num_classes, tuple(args.image_size)
  mesh = sharding.make_data_mesh(1)
  rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  teacher = train.build_teacher(config, num_classes)
  model = teacher if phase == 1 else train.build_student(config, num_classes)
  variables = random_variables(model, size, seed=0)
  opt = optim.make_optimizer(config.optim, variables["params"], 1000)
  state = sharding.put_replicated(steps.create_state(variables, opt.tx), mesh)
  loss_config = config.loss.to_dict()
  keys = ("hr", "label") if phase == 1 else ("hr", "lr", "label")
  batch = sharding.put_batch({k: batch_np[k] for k in keys}, mesh)
  rng = sharding.put_replicated(jax.random.key(1), mesh)
  if phase == 1:
    step = steps.jit_step(steps.phase1_step, rep, data, model=model,
                          tx=opt.tx, loss_config=loss_config)
    extra = ()
  else:
    step = steps.jit_step(steps.phase2_step, rep, data, num_extra_args=1,
                          student=model, teacher=teacher, tx=opt.tx,
                          loss_config=loss_config)
    extra = (sharding.put_replicated(random_variables(teacher, size, 2),
                                     mesh),)
  t0 = time.perf_counter()
  if args.conv_impl == "fast":
    with nn.intercept_methods(_fast_1x1_interceptor):
      compiled = step.lower(state, batch, rng, *extra).compile()
  else:
    compiled = step.lower(state, batch, rng, *extra).compile()
  compile_s = time.perf_counter() - t0
  times, first_loss = [], None
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, rng, *extra)
    loss = float(metrics["loss"])
    if i >= args.warmup:
      times.append(1e3 * (time.perf_counter() - t0))
    first_loss = loss if first_loss is None else first_loss
  if not np.isfinite(loss):
    raise FloatingPointError(f"JAX phase {phase}: loss became {loss}")

  # Forward + loss alone, as inside the step (train-mode BN, dropout).
  def forward(params, batch_stats, teacher_vars, b):
    kw = dict(ce_weight=loss_config["ce_weight"], margin=loss_config[
        "triplet_margin"], label_smoothing=loss_config["label_smoothing"],
              triplet_weight=loss_config["triplet_weight"])
    lr_or_hr = features.normalize_images(b["hr" if phase == 1 else "lr"])
    (_, aux), _ = model.apply({"params": params, "batch_stats": batch_stats},
                              lr_or_hr, train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.key(3)})
    if phase == 1:
      return losses.id_loss(aux, b["label"], **kw)[0]
    hr = features.normalize_images(b["hr"])
    _, t_aux = teacher.apply(teacher_vars, hr, train=False)
    return losses.total_loss(aux, t_aux, hr, b["label"],
                             sr_weight=loss_config["sr_weight"],
                             ps_weight=loss_config["ps_weight"],
                             ps_features=tuple(loss_config["ps_features"]),
                             **kw)[0]
  fwd = jax.jit(forward)
  fwd_args = (state.params, state.batch_stats, extra[0] if extra else {},
              batch)
  forward_ms = _min_ms(lambda: fwd(*fwd_args).block_until_ready(),
                          max(args.steps, 2))
  return dict(compile_s=compile_s, step_ms=times,
              forward_ms=forward_ms, loss=first_loss, model=model,
              teacher=teacher, variables=variables,
              teacher_variables=extra[0] if extra else None)


# --------------------------------------------------------------- torch side
def torch_forward(net, x):
  """The reference model's train-mode outputs, l_f taken before dropout."""
  sr = net.vdsr(x) if hasattr(net, "vdsr") else x
  seqs = []
  for y, (s, lam) in zip(net.backbone(sr), _POOLS):
    p = F.adaptive_avg_pool2d(y, s) + lam * F.adaptive_max_pool2d(y, s)
    seqs.append(p.reshape(p.shape[0], -1))
  out = {f"seq{n}": v for n, v in enumerate(seqs, 1)}
  out["seq5"] = torch.cat(seqs, 1)
  block = net.classifier
  out["l_f"] = block.add_block[1](block.add_block[0](out["seq5"]))
  out["logits"] = block.classifier(block.add_block[2](out["l_f"]))
  out["sr"] = sr
  return out


def torch_triplet(f, labels, margin):
  """Batch-hard triplet as losses.batch_hard_triplet (torchreid's)."""
  sq = (f * f).sum(1)
  dist = (sq[:, None] + sq[None, :] - 2.0 * f @ f.T).clamp(min=1e-12).sqrt()
  same = labels[:, None] == labels[None, :]
  positive = torch.where(same, dist, torch.full_like(dist, -1.0)).amax(1)
  negative = torch.where(same, torch.full_like(dist, float("inf")),
                         dist).amin(1)
  return F.relu(positive - negative + margin).mean()


def torch_loss(out, labels, lc, teacher_out=None, hr=None):
  """L_ID, or L_TOTAL when the teacher's outputs and HR images are given."""
  loss = lc["ce_weight"] * F.cross_entropy(
      out["logits"], labels, label_smoothing=lc["label_smoothing"])
  loss = loss + lc["triplet_weight"] * sum(
      torch_triplet(out[k], labels, lc["triplet_margin"])
      for k in losses.SEQ_KEYS)
  if teacher_out is not None:
    loss = loss + lc["sr_weight"] * (out["sr"] - hr).abs().mean()
    loss = loss + lc["ps_weight"] * sum(
        (teacher_out[k] - out[k]).abs().mean() for k in lc["ps_features"])
  return loss


def _torch_images(images):
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
  mean = torch.tensor(features.IMAGENET_MEAN).view(1, 3, 1, 1)
  return (x - mean) / torch.tensor(features.IMAGENET_STD).view(1, 3, 1, 1)


def torch_phase(phase, config, args, batch_np):
  """Times the eager PyTorch step; returns a result dict."""
  torch.manual_seed(0)
  m, lc = config.model, config.loss.to_dict()
  net_args = (args.width, args.num_classes, tuple(m.head_planes))
  sr = tr.VDSR(args.sr_blocks, args.sr_features) if phase == 2 else None
  net = tr.HighResolutionNet(*net_args, reid=True, sr=sr).train()
  teacher = tr.randomize(tr.HighResolutionNet(*net_args, reid=True), 2)
  unused = ("downsamp_modules.", "final_layer.")  # not in the ReID model
  groups = {"hrnet": [], "sr": []}
  for name, p in net.named_parameters():
    if not name.startswith(unused):
      groups["sr" if name.startswith("vdsr.") else "hrnet"].append(p)
  lrs = {k: g["lr"] for k, g in config.optim.groups.items()}
  opt = torch.optim.SGD([{"params": v, "lr": lrs[k]}
                         for k, v in groups.items() if v],
                        lr=lrs["hrnet"], momentum=config.optim.momentum,
                        nesterov=True, weight_decay=config.optim.weight_decay)
  hr, lr = _torch_images(batch_np["hr"]), _torch_images(batch_np["lr"])
  labels = torch.from_numpy(batch_np["label"]).long()
  step_ms, fwd_ms, first_loss = [], [], None
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    if phase == 1:
      loss = torch_loss(torch_forward(net, hr), labels, lc)
    else:
      with torch.no_grad():
        t_out = torch_forward(teacher, hr)
      loss = torch_loss(torch_forward(net, lr), labels, lc, t_out, hr)
    t1 = time.perf_counter()
    loss.backward()
    opt.step()
    t2 = time.perf_counter()
    first_loss = float(loss.detach()) if first_loss is None else first_loss
    if i >= args.warmup:
      step_ms.append(1e3 * (t2 - t0))
      fwd_ms.append(1e3 * (t1 - t0))
  return dict(step_ms=step_ms, forward_ms=min(fwd_ms),
              loss=first_loss)


# ---------------------------------------------------------------- breakdown
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
  res = {k: _min_ms(lambda f=f, a=a: f(*a).block_until_ready(), repeats)
         for k, (f, a) in progs.items()}
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
  wt = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous()
  gt = torch.from_numpy(np.array(g)).permute(0, 3, 1, 2).contiguous()
  pad = padding[0][0]
  with torch.no_grad():
    res["t_fwd"] = _min_ms(lambda: F.conv2d(xt, wt, None, stride, pad),
                              repeats)
    res["t_dx"] = _min_ms(lambda: torch.nn.grad.conv2d_input(
        xt.shape, wt, gt, stride, pad), repeats)
    res["t_dw"] = _min_ms(lambda: torch.nn.grad.conv2d_weight(
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
  res = {"fwd": _min_ms(lambda: fwd(v["params"], x).block_until_ready(),
                           repeats)}
  res["bwd"] = (_min_ms(lambda: jax.block_until_ready(
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
    res["t_fwd"] = _min_ms(lambda: run(xt), repeats)
  if train_mode:
    xg = xt.clone().requires_grad_(True)
    res["t_bwd"] = _min_ms(lambda: run(xg).sum().backward(),
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
def _row(name, jax_ms, torch_ms):
  ratio = f"{jax_ms / torch_ms:7.2f}" if torch_ms else "      -"
  t = f"{torch_ms:10.1f}" if torch_ms is not None else "         -"
  print(f"  {name:<40s}{jax_ms:10.1f}{t}   {ratio}")


def report_phase(phase, jres, tres, args):
  b = args.p * args.k
  j_ms, t_ms = (statistics.median(jres["step_ms"]),
                statistics.median(tres["step_ms"]))
  what = ("teacher, L_ID" if phase == 1
          else "student + frozen teacher, L_TOTAL")
  print(f"\nPhase {phase} ({what}), {b} pairs/step, {_load()}")
  print(f"  JAX   compile {jres['compile_s']:.1f}"
        f" s, step {j_ms:.0f} ms (min {min(jres['step_ms']):.0f}), "
        f"{1e3 * b / j_ms:.2f} pairs/s, first loss {jres['loss']:.3f}")
  print(f"  torch step {t_ms:.0f} ms (min {min(tres['step_ms']):.0f}), "
        f"{1e3 * b / t_ms:.2f} pairs/s, first loss {tres['loss']:.3f}")
  print(f"  speed JAX/torch = {t_ms / j_ms:.2f}x (>1: JAX faster; medians)")
  if os.getloadavg()[0] > os.cpu_count():
    print(f"  NOTE: load above {os.cpu_count()} cores: other processes share "
          "the CPU; torch with >1 thread suffers most (threads wait at "
          "barriers for a pre-empted peer); try --torch_threads=1")
  if args.no_breakdown:
    return
  j_ms, t_ms = min(jres["step_ms"]), min(tres["step_ms"])
  totals, fast_dw, per_conv, n_layers = breakdown(phase, jres, args)
  print(f"  Breakdown, ms per step, best of the timed steps / of "
        f"{args.micro_repeats} micro runs ({n_layers} conv/BN calls; "
        "micro sums add up isolated per-shape programs):")
  print(f"  {'':<40s}{'JAX':>10s}{'torch':>10s}   JAX/torch")
  _row("step (measured)", j_ms, t_ms)
  _row("forward + loss (measured)", jres["forward_ms"], tres["forward_ms"])
  _row("backward + update (step - forward)", j_ms - jres["forward_ms"],
       t_ms - tres["forward_ms"])
  micro = [0.0, 0.0]
  for name, (jv, tv) in totals.items():
    _row(f"{name} (micro sum)", jv, tv)
    micro = [micro[0] + jv, micro[1] + tv]
  _row("other (step - micro sums; estimate)", j_ms - micro[0],
       t_ms - micro[1])
  _row("conv weight-grad via fast_conv (micro)", fast_dw, None)
  print("  Largest JAX conv weight-grad shapes (ms per call; n = calls):")
  print("    n  input (B,H,W,C)      k  s  out |  JAX fwd    dx    dw "
        "shifted dw | torch fwd    dx    dw")
  per_conv.sort(key=lambda r: -r[0] * r[2]["dw"])
  for n, rec, t in per_conv[:args.top_shapes]:
    print(f"  {n:3d}  {str(rec[1]):<19s}{rec[2][0]:2d} {rec[4][0]:2d} "
          f"{rec[3]:4d} | {t['fwd']:8.1f}{t['dx']:6.1f}{t['dw']:6.1f}"
          f"{t['dw_shifted']:11.1f} | {t['t_fwd']:9.1f}{t['t_dx']:6.1f}"
          f"{t['t_dw']:6.1f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ints = lambda text: [int(v) for v in text.split(",")]
  for name, default in (("width", 8), ("sr_blocks", 6), ("sr_features", 16),
                        ("num_classes", 751), ("p", 4), ("k", 6),
                        ("steps", 5), ("warmup", 1), ("micro_repeats", 5),
                        ("top_shapes", 8), ("torch_threads", os.cpu_count())):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--image_size", type=ints, default=[128, 64],
                      help="H,W (multiples of 32)")
  parser.add_argument("--head_planes", type=ints, default=None,
                      help="default: width * (1, 2, 4, 8)")
  parser.add_argument("--phases", default="1,2")
  parser.add_argument("--conv_impl", choices=("xla", "fast"), default="xla")
  parser.add_argument("--no_breakdown", action="store_true")
  parser.add_argument("--compilation_cache", default="",
                      help="persistent XLA cache dir; JAX compile times are "
                      "then cache loads when warm")
  args = parser.parse_args()
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if len(args.image_size) != 2 or any(v % 32 for v in args.image_size):
    parser.error(f"--image_size must be H,W with multiples of 32, got "
                 f"{args.image_size}")
  if args.steps < 1 or args.num_classes < args.p:
    parser.error("--steps must be >= 1 and --num_classes >= --p")
  torch.set_num_threads(args.torch_threads)
  config = make_config(args)
  print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{_load()}; Python {platform.python_version()}, jax {jax.__version__}"
        f" ({jax.devices()[0].platform}, {jax.device_count()} device), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads)")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  conv_impl="
        f"{args.conv_impl}  compilation cache: "
        f"{args.compilation_cache or 'off'}")
  print(f"Config: HRNet-W{args.width}, head_planes "
        f"{tuple(config.model.head_planes)}, VDSR-CA {args.sr_blocks} blocks "
        f"x {args.sr_features} ch, {args.image_size[0]}x{args.image_size[1]},"
        f" P x K = {args.p} x {args.k}, M = {args.num_classes}, float32, "
        f"{args.warmup} warm-up + {args.steps} timed steps")
  batch = make_batch(args)
  for phase in (int(p) for p in args.phases.split(",")):
    jres = jax_phase(phase, config, args, batch)
    tres = torch_phase(phase, config, args, batch)
    report_phase(phase, jres, tres, args)


if __name__ == "__main__":
  main()
