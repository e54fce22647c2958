"""PS-HRNet's training forward and losses in PyTorch, written from the method.

The reference side of `scripts/benchmark_train.py` (and of any test that
wants a PyTorch training step): the student/teacher outputs of a
`torch_models.HighResolutionNet`, and L_ID / L_TOTAL with the paper's terms
(label-smoothed CE, batch-hard triplet over Seq1..Seq5, L1 SR, L1 pseudo-
siamese over the chosen outputs).
"""

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEQ_KEYS = ("seq1", "seq2", "seq3", "seq4", "seq5")
_POOLS = ((4, 0.5), (2, 0.2), (2, 0.2), (1, 0.2))  # (grid s, lambda) per branch


def forward(net, x):
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


def triplet(f, labels, margin):
  """Batch-hard triplet as losses.batch_hard_triplet (torchreid's)."""
  sq = (f * f).sum(1)
  dist = (sq[:, None] + sq[None, :] - 2.0 * f @ f.T).clamp(min=1e-12).sqrt()
  same = labels[:, None] == labels[None, :]
  positive = torch.where(same, dist, torch.full_like(dist, -1.0)).amax(1)
  negative = torch.where(same, torch.full_like(dist, float("inf")),
                         dist).amin(1)
  return F.relu(positive - negative + margin).mean()


def loss(out, labels, lc, teacher_out=None, hr=None):
  """L_ID, or L_TOTAL when the teacher's outputs and HR images are given."""
  loss = lc["ce_weight"] * F.cross_entropy(
      out["logits"], labels, label_smoothing=lc["label_smoothing"])
  loss = loss + lc["triplet_weight"] * sum(
      triplet(out[k], labels, lc["triplet_margin"])
      for k in SEQ_KEYS)
  if teacher_out is not None:
    loss = loss + lc["sr_weight"] * (out["sr"] - hr).abs().mean()
    loss = loss + lc["ps_weight"] * sum(
        (teacher_out[k] - out[k]).abs().mean() for k in lc["ps_features"])
  return loss


def images(images):
  """uint8 NHWC numpy -> ImageNet-normalised float NCHW tensor."""
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
  mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
  return (x - mean) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
