"""PyTorch references of the paper's ablation networks, for parity tests.

torchvision cannot be installed beside this project's CPU torch, so these
are written in plain torch with the key names of the code they stand for:

- `ResNet`: torchvision's `resnet50` (v1.5: the stride of a down-sampling
  Bottleneck on its 3x3 convolution; keys conv1, bn1, layerL.K.*, fc);
  width and depth configurable so tests can run a narrow, shallow one.
- `SRCNN`: the 9-5-5 SRCNN of yjn870/SRCNN-pytorch (conv1..conv3, padding
  k // 2).
- `RCAN`: the authors' EDSR-PyTorch `model/rcan.py` without MeanShift and
  up-sampler (head.0, body.G.body.B.body.{0,2,3.conv_du.{0,2}}, body.G.body.B
  (group conv), body.G (body conv), tail.0).
torch is a test-only dependency.
"""

import torch
from torch import nn
import torch.nn.functional as F

from reference.torch_models import make_layer


class ResNet(nn.Module):
  """torchvision's Bottleneck ResNet (ResNet-50 with the defaults)."""

  def __init__(self, blocks=(3, 4, 6, 3), num_classes=1000, width=64):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = width
    for i, num_blocks in enumerate(blocks):
      planes = width * 2**i
      setattr(self, f"layer{i + 1}",
              make_layer(inplanes, planes, num_blocks, 1 if i == 0 else 2))
      inplanes = planes * 4
    self.fc = nn.Linear(inplanes, num_classes)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SRCNN(nn.Module):

  def __init__(self, features=(64, 32)):
    super().__init__()
    self.conv1 = nn.Conv2d(3, features[0], 9, padding=4)
    self.conv2 = nn.Conv2d(features[0], features[1], 5, padding=2)
    self.conv3 = nn.Conv2d(features[1], 3, 5, padding=2)

  def forward(self, x):
    return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


def _conv3x3(cin, cout):
  return nn.Conv2d(cin, cout, 3, padding=1)


class CALayer(nn.Module):

  def __init__(self, channels, reduction):
    super().__init__()
    self.conv_du = nn.Sequential(
        nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
        nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

  def forward(self, x):
    return x * self.conv_du(F.adaptive_avg_pool2d(x, 1))


class RCAB(nn.Module):

  def __init__(self, channels, reduction):
    super().__init__()
    self.body = nn.Sequential(_conv3x3(channels, channels),
                              nn.ReLU(inplace=True),
                              _conv3x3(channels, channels),
                              CALayer(channels, reduction))

  def forward(self, x):
    return self.body(x) + x


class ResidualGroup(nn.Module):

  def __init__(self, channels, reduction, num_blocks):
    super().__init__()
    self.body = nn.Sequential(
        *[RCAB(channels, reduction) for _ in range(num_blocks)],
        _conv3x3(channels, channels))

  def forward(self, x):
    return self.body(x) + x


class RCAN(nn.Module):

  def __init__(self, num_groups=10, num_blocks=20, channels=64, reduction=16):
    super().__init__()
    self.head = nn.Sequential(_conv3x3(3, channels))
    self.body = nn.Sequential(
        *[ResidualGroup(channels, reduction, num_blocks)
          for _ in range(num_groups)], _conv3x3(channels, channels))
    self.tail = nn.Sequential(_conv3x3(channels, 3))

  def forward(self, x):
    x = self.head(x)
    return self.tail(self.body(x) + x)
