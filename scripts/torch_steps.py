"""The PyTorch side of the benchmark scripts, on any device.

`scripts/benchmark_train.py`, `scripts/benchmark_extract.py` and
`scripts/accelerator_check.py` build their PyTorch baselines here: the
reference training step of a phase (reference/torch_models.py and
reference/torch_train.py: the same network, losses and SGD as the JAX
step), the student's flip-summed features, and a matrix-product rate (the
attainable peak the extraction is measured against). Nothing here imports
JAX.
"""

import contextlib
import time

import torch

from reference import torch_models as tr
from reference import torch_train

# reference/torch_models.py's modules that the ReID model never runs.
_UNUSED = ("downsamp_modules.", "final_layer.")


def synchronize(device: torch.device) -> None:
  """Waits for the device's queued work (a no-op on the CPU)."""
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype):
  """`torch.autocast` to `dtype` (None or float32: full precision)."""
  if dtype in (None, torch.float32):
    return contextlib.nullcontext()
  return torch.autocast(device_type=device.type, dtype=dtype)


def _student(config, args, seed, sr=True, depth=None):
  m = config.model
  depth = depth or dict(modules=tuple(args.hrnet_modules),
                        blocks=args.hrnet_blocks)
  sr_net = (tr.VDSR(args.sr_blocks, args.sr_features,  # As the JAX one.
                    squeeze=args.sr_features // m.ca_reduction)
            if sr else None)
  return tr.randomize(tr.HighResolutionNet(
      args.width, args.num_classes, tuple(m.head_planes), reid=True,
      sr=sr_net, **depth), seed)


class TrainStep:
  """A phase's training step in PyTorch, as `steps.phase1_step` /
  `phase2_step` do it: phase 1 the HR teacher with L_ID; phase 2 the
  student (VDSR-CA + HRNet-ReID) on the LR images with L_TOTAL against a
  frozen eval-mode teacher on the HR images. SGD (Nesterov, the paper's two
  learning-rate groups, weight decay). The batch is moved to `device` once.

  `amp_dtype` (e.g. torch.bfloat16) runs the forward and loss under
  `torch.autocast` (parameters and optimiser state stay float32, as the
  JAX side's `compute_dtype`); `compile_backend` wraps forward + loss in
  `torch.compile(backend=...)` (the backward is then compiled too).
  """

  def __init__(self, phase, config, args, batch_np, *, device="cpu",
               amp_dtype=None, compile_backend=None):
    torch.manual_seed(0)
    self.phase = phase
    self.device = torch.device(device)
    self.amp_dtype = amp_dtype
    self.loss_config = config.loss.to_dict()
    self.net = _student(config, args, 0, sr=phase == 2).train().to(
        self.device)
    self.teacher = _student(config, args, 2, sr=False).to(self.device)
    groups = {"hrnet": [], "sr": []}
    for name, p in self.net.named_parameters():
      if not name.startswith(_UNUSED):
        groups["sr" if name.startswith("vdsr.") else "hrnet"].append(p)
    lrs = {k: g["lr"] for k, g in config.optim.groups.items()}
    self.opt = torch.optim.SGD(
        [{"params": v, "lr": lrs[k]} for k, v in groups.items() if v],
        lr=lrs["hrnet"], momentum=config.optim.momentum, nesterov=True,
        weight_decay=config.optim.weight_decay)
    self.hr = torch_train.images(batch_np["hr"]).to(self.device)
    self.lr = torch_train.images(batch_np["lr"]).to(self.device)
    self.labels = torch.from_numpy(batch_np["label"]).long().to(self.device)
    self._forward_loss = self._eager_forward_loss
    if compile_backend:
      self._forward_loss = torch.compile(self._eager_forward_loss,
                                         backend=compile_backend)

  def _eager_forward_loss(self, hr, lr, labels):
    with autocast(self.device, self.amp_dtype):
      if self.phase == 1:
        return torch_train.loss(torch_train.forward(self.net, hr), labels,
                                self.loss_config)
      with torch.no_grad():
        t_out = torch_train.forward(self.teacher, hr)
      return torch_train.loss(torch_train.forward(self.net, lr), labels,
                              self.loss_config, t_out, hr)

  def forward_loss(self) -> torch.Tensor:
    """Zeroes the gradients; returns the loss of the forward pass."""
    self.opt.zero_grad(set_to_none=True)
    return self._forward_loss(self.hr, self.lr, self.labels)

  def update(self, loss: torch.Tensor) -> None:
    loss.backward()
    self.opt.step()

  def __call__(self) -> torch.Tensor:
    loss = self.forward_loss()
    self.update(loss)
    return loss


def time_steps(step, warmup: int, steps: int) -> dict:
  """Runs `step()` warmup + steps times, the device synchronised around
  each; the timed steps' milliseconds and the first and last loss."""
  times, losses = [], []
  for i in range(warmup + steps):
    synchronize(step.device)
    t0 = time.perf_counter()
    loss = step()
    synchronize(step.device)
    if i >= warmup:
      times.append(1e3 * (time.perf_counter() - t0))
    losses.append(float(loss.detach()))
  return dict(step_ms=times, first_loss=losses[0], last_loss=losses[-1])


def student(config, args, device="cpu"):
  """The reference student (VDSR-CA + HRNet-ReID) in eval mode, random."""
  return _student(config, args, 0).to(torch.device(device)).eval()


def features(net, x: torch.Tensor, amp_dtype=None) -> torch.Tensor:
  """Flip-summed, L2-normalised concat(seq5, l_f) of NCHW images `x`, as
  the evaluation's `features.flip_summed`."""
  batch = x.shape[0]
  with torch.no_grad(), autocast(x.device, amp_dtype):
    both = torch.cat([x, torch.flip(x, dims=[3])])
    out = torch_train.forward(net, both)
    f = torch.cat([out["seq5"], out["l_f"]], 1).float()
  f = f[:batch] + f[batch:]
  return f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)


def matmul_gflops(device="cpu", dtype=torch.float32, n=2048,
                  repeats=5) -> float:
  """The best rate of `torch.mm` on n x n random matrices, GFLOP/s."""
  device = torch.device(device)
  torch.manual_seed(0)
  a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in "ab")
  torch.mm(a, b)
  best = float("inf")
  for _ in range(repeats):
    synchronize(device)
    t0 = time.perf_counter()
    torch.mm(a, b)
    synchronize(device)
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9
