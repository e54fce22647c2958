"""PyTorch reference modules for the parity tests, written from SPEC 1.

Module and attribute names reproduce the state-dict keys of the official
HRNet-Image-Classification code (HRNet-W*-C) and of the released PS-HRNet
notebooks (`vdsr.*`, `classifier.add_block.*`, `classifier.classifier.*`),
so the converters in `pshrnet_jax.convert` are tested on realistic keys.
torch is a test-only dependency.
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

BN_MOMENTUM = 0.1
STAGES = ((1, 2), (4, 3), (3, 4))  # (modules, branches) of stages 2..4.


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + x)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    residual = x if self.downsample is None else self.downsample(x)
    return F.relu(out + residual)


def make_layer(inplanes, planes, blocks, stride=1):
  downsample = None
  if stride != 1 or inplanes != planes * 4:
    downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
        nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM))
  layers = [Bottleneck(inplanes, planes, stride, downsample)]
  layers += [Bottleneck(planes * 4, planes) for _ in range(1, blocks)]
  return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):

  def __init__(self, channels, blocks=4):
    super().__init__()
    n = len(channels)
    self.branches = nn.ModuleList(
        nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)])
        for c in channels)
    fuse_layers = []
    for i in range(n):
      fuse_layer = []
      for j in range(n):
        if j > i:
          fuse_layer.append(nn.Sequential(
              nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
              nn.BatchNorm2d(channels[i], momentum=BN_MOMENTUM),
              nn.Upsample(scale_factor=2**(j - i), mode="nearest")))
        elif j == i:
          fuse_layer.append(None)
        else:
          steps = []
          for k in range(i - j):
            if k == i - j - 1:
              steps.append(nn.Sequential(
                  nn.Conv2d(channels[j], channels[i], 3, 2, 1, bias=False),
                  nn.BatchNorm2d(channels[i], momentum=BN_MOMENTUM)))
            else:
              steps.append(nn.Sequential(
                  nn.Conv2d(channels[j], channels[j], 3, 2, 1, bias=False),
                  nn.BatchNorm2d(channels[j], momentum=BN_MOMENTUM),
                  nn.ReLU(False)))
          fuse_layer.append(nn.Sequential(*steps))
      fuse_layers.append(nn.ModuleList(fuse_layer))
    self.fuse_layers = nn.ModuleList(fuse_layers)

  def forward(self, x):
    x = [branch(xi) for branch, xi in zip(self.branches, x)]
    out = []
    for i, fuse in enumerate(self.fuse_layers):
      y = x[0] if i == 0 else fuse[0](x[0])
      for j in range(1, len(x)):
        y = y + (x[j] if i == j else fuse[j](x[j]))
      out.append(F.relu(y))
    return out


def make_transition(pre, cur):
  layers = []
  for i, c in enumerate(cur):
    if i < len(pre):
      if c != pre[i]:
        layers.append(nn.Sequential(
            nn.Conv2d(pre[i], c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)))
      else:
        layers.append(None)
    else:
      steps = []
      for k in range(i + 1 - len(pre)):
        out = c if k == i - len(pre) else pre[-1]
        steps.append(nn.Sequential(
            nn.Conv2d(pre[-1], out, 3, 2, 1, bias=False),
            nn.BatchNorm2d(out, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)))
      layers.append(nn.Sequential(*steps))
  return nn.ModuleList(layers)


class HighResolutionNet(nn.Module):
  """Official HRNet-W*-C layout; `reid=True` swaps in the released ReID head
  (ClassBlock as `classifier`) and `sr` prepends a VDSR as `vdsr`."""

  def __init__(self, width=32, num_classes=1000, head_planes=(32, 64, 128, 256),
               final_features=2048, reid=False, sr=None,
               modules=tuple(m for m, _ in STAGES), blocks=4):
    super().__init__()
    if sr is not None:
      self.vdsr = sr
    self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
    self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
    self.layer1 = make_layer(64, 64, 4)
    channels = [width * 2**i for i in range(4)]
    pre = [256]
    # `modules` and `blocks` shrink the stages as config.model.hrnet_modules
    # and hrnet_blocks do (the demo's network); the official layout is the
    # default.
    for s, ((_, branches), count) in enumerate(zip(STAGES, modules), start=2):
      cur = channels[:branches]
      setattr(self, f"transition{s - 1}", make_transition(pre, cur))
      setattr(self, f"stage{s}", nn.Sequential(
          *[HighResolutionModule(cur, blocks) for _ in range(count)]))
      pre = cur
    self.incre_modules = nn.ModuleList(
        make_layer(c, p, 1) for c, p in zip(channels, head_planes))
    # Present (unused) in the released ReID checkpoints too.
    self.downsamp_modules = nn.ModuleList(
        nn.Sequential(
            nn.Conv2d(head_planes[i] * 4, head_planes[i + 1] * 4, 3, 2, 1),
            nn.BatchNorm2d(head_planes[i + 1] * 4, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True)) for i in range(3))
    self.final_layer = nn.Sequential(
        nn.Conv2d(head_planes[3] * 4, final_features, 1, 1, 0),
        nn.BatchNorm2d(final_features, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True))
    self.reid = reid
    if reid:
      seq = sum(p * 4 * s * s for p, s in zip(head_planes, (4, 2, 2, 1)))
      self.classifier = ClassBlock(seq, num_classes)
    else:
      self.classifier = nn.Linear(final_features, num_classes)

  def backbone(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.relu(self.bn2(self.conv2(x)))
    xs = [self.layer1(x)]
    for s in range(2, 5):
      transition = getattr(self, f"transition{s - 1}")
      xs = [xs[i] if t is None else t(xs[-1]) for i, t in enumerate(transition)]
      xs = getattr(self, f"stage{s}")(xs)
    return [m(x) for m, x in zip(self.incre_modules, xs)]

  def forward(self, x):
    sr = self.vdsr(x) if hasattr(self, "vdsr") else x
    ys = self.backbone(sr)
    if not self.reid:
      y = ys[0]
      for i, down in enumerate(self.downsamp_modules):
        y = ys[i + 1] + down(y)
      y = self.final_layer(y)
      return self.classifier(y.mean(dim=(2, 3)))
    seqs = []
    for y, s, lam in zip(ys, (4, 2, 2, 1), (0.5, 0.2, 0.2, 0.2)):
      p = F.adaptive_avg_pool2d(y, s) + lam * F.adaptive_max_pool2d(y, s)
      seqs.append(p.reshape(p.shape[0], -1))
    seq5 = torch.cat(seqs, 1)
    l_f = self.classifier.add_block(seq5)  # Dropout is a no-op in eval.
    logits = self.classifier.classifier(l_f)
    out = {f"seq{n}": v for n, v in enumerate(seqs + [seq5], 1)}
    out.update(l_f=l_f, logits=logits, sr=sr)
    return out


class ClassBlock(nn.Module):
  """The released code's ClassBlock: add_block (Linear, BN1d, Dropout) and
  classifier (Linear)."""

  def __init__(self, input_dim, class_num, droprate=0.5, bottleneck=512):
    super().__init__()
    self.add_block = nn.Sequential(
        nn.Linear(input_dim, bottleneck), nn.BatchNorm1d(bottleneck),
        nn.Dropout(droprate))
    self.classifier = nn.Sequential(nn.Linear(bottleneck, class_num))


class ChannelAttention(nn.Module):

  def __init__(self, features=64, squeeze=4):
    super().__init__()
    self.module = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(features, squeeze, 1),
        nn.ReLU(inplace=True), nn.Conv2d(squeeze, features, 1), nn.Sigmoid())

  def forward(self, x):
    return x * self.module(x)


class ConvReLUBlock(nn.Module):

  def __init__(self, features=64, squeeze=4, attention=True):
    super().__init__()
    self.conv = nn.Conv2d(features, features, 3, 1, 1, bias=False)
    if attention:
      self.ca = ChannelAttention(features, squeeze)

  def forward(self, x):
    y = self.conv(x)
    if hasattr(self, "ca"):
      y = self.ca(y)
    return F.relu(y)


class VDSR(nn.Module):
  """The released VDSR-CA (`attention=False`: plain VDSR)."""

  def __init__(self, num_blocks=18, features=64, squeeze=4, attention=True):
    super().__init__()
    self.residual_layer = nn.Sequential(
        *[ConvReLUBlock(features, squeeze, attention)
          for _ in range(num_blocks)])
    self.input = nn.Conv2d(3, features, 3, 1, 1, bias=False)
    self.output = nn.Conv2d(features, 3, 3, 1, 1, bias=False)

  def forward(self, x):
    out = F.relu(self.input(x))
    return self.output(self.residual_layer(out)) + x


class SmallCNN(nn.Module):
  """Some other architecture, for the 'wrong checkpoint' tests."""

  def __init__(self):
    super().__init__()
    self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    self.fc = nn.Linear(8, 10)


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights AND BatchNorm statistics/affines, kept well-scaled.

  PyTorch's default 0/1 running statistics would hide a mix-up of mean and
  variance or of scale and bias; random ones do not. Conv/Linear weights are
  N(0, 0.5 / fan_in): with 1 / fan_in the residual sums and multi-branch
  fusions of HRNet-W32 grow logits to ~1e5; with 0.5 they stay ~30.

  Args:
    module: the module to modify in place (it is also returned, in eval mode).
    seed: torch generator seed.

  Returns:
    The module, in eval mode.
  """
  g = torch.Generator().manual_seed(seed)

  def uniform(t, lo, hi):
    t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))

  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        fan_in = int(np.prod(m.weight.shape[1:]))
        m.weight.copy_(torch.randn(m.weight.shape, generator=g)
                       * np.sqrt(0.5 / fan_in))
        if m.bias is not None:
          uniform(m.bias, -0.1, 0.1)
      elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        uniform(m.weight, 0.5, 1.5)
        uniform(m.bias, -0.2, 0.2)
        uniform(m.running_mean, -0.2, 0.2)
        uniform(m.running_var, 0.5, 1.5)
        m.num_batches_tracked.fill_(7)
  return module.eval()


def state_dict_numpy(module: nn.Module) -> dict[str, np.ndarray]:
  """The module's state dict as numpy arrays (as torch_io would return)."""
  return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
