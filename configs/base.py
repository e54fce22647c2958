"""Shared defaults for every benchmark config: SPEC sections 1-4.

Those are the paper's values where the paper states them; where only the
authors' released code speaks, SPEC takes the code's value (the HRNet-ReID
pooling weights lambda_n, the epsilons, Nesterov momentum and dropout 0.5
are the released code's: the paper does not state them). Each benchmark file calls
`get_base_config(preset)` and sets only what differs. Where the paper and
the released code differ (SPEC section 7, and the channel-attention size
below), the paper is the default and the released code's choices are a
preset, selected with the config argument:

    --config=configs/mlr_cuhk03.py                 # the paper (default)
    --config=configs/mlr_cuhk03.py:released_code   # the authors' notebooks

`config.preset` records which one was used; it is read-only afterwards
(changing it with `--config.preset=...` could not undo the values the preset
already set, so `main` refuses that and points to the argument form).
"""

from __future__ import annotations

import ml_collections

PRESETS = ("paper", "released_code")

# Every parameter falls in exactly one group; patterns are `re.search`ed
# against '/'-joined parameter paths. The student keeps VDSR-CA under 'sr/'.
_PAPER_GROUPS = {
    "hrnet": {"pattern": r"^(?!sr/)", "lr": 8.5e-3},
    "sr": {"pattern": r"^sr/", "lr": 8.5e-4},
}


def get_base_config(preset: str = "paper") -> ml_collections.ConfigDict:
  """Returns the unlocked base config for `preset` ('paper' or 'released_code')."""
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r}; expected one of {PRESETS}.")
  released = preset == "released_code"
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.seed = 0
  # 'all' runs phase 1 (teacher), phase 2 (student) and evaluation in order.
  config.mode = "all"  # 'phase1' | 'phase2' | 'eval' | 'all'
  # ImageNet weights of the extractor: an Orbax directory written by
  # `python -m pshrnet_jax.convert`, or the .pth itself (converted on the
  # fly: HRNet-W*-C, or torchvision's resnet50 for backbone=resnet50).
  # 'none': random initialisation, on purpose.
  config.init_from = ""
  # SPEC 3: phase 1 (and phase 2's student with student_init=imagenet)
  # starts from ImageNet weights, so a benchmark run refuses to start
  # without --config.init_from (a path, or 'none'). The demo, which has no
  # ImageNet weights, sets this False and trains from random weights.
  config.init_from_required = True
  config.student_init = "imagenet"  # 'imagenet' | 'teacher' (SPEC 3, phase 2)
  # Where phase 2 finds the frozen teacher; empty means WORKDIR/phase1.
  config.teacher_dir = ""
  config.hr_only = False  # HR-only benchmarks (Table VI): no phase 2
  # Multi-process runs: jax.distributed.initialize() with these, where set
  # (else JAX's environment: JAX_COORDINATOR_ADDRESS, SLURM, ...).
  config.distributed = False
  config.coordinator_address = ""  # e.g. '127.0.0.1:12355'
  config.num_processes = 0  # 0: from the environment
  config.process_id = -1  # -1: from the environment
  config.distributed_timeout_s = 300  # how long to wait for every process
  config.num_devices = 0  # 0: all visible devices
  # JAX's persistent compilation cache; empty turns it off.
  config.compilation_cache_dir = "~/.cache/pshrnet_jax/xla"

  config.model = ml_collections.ConfigDict()
  # The extractor (paper Table IV compares SR modules in front of resnet50)
  # and, for HRNet, its representation head: 'reid' (SPEC 1.3) or
  # 'imagenet' (HRNet-W32-C's own head, Table VI's reference row).
  config.model.backbone = "hrnet"  # 'hrnet' | 'resnet50'
  config.model.head = "reid"  # 'reid' | 'imagenet' (HRNet only)
  config.model.width = 32
  config.model.head_planes = (32, 64, 128, 256)
  # HRNet-W*-C's depth: modules of stages 2-4, blocks of layer1 and of each
  # branch. Smaller values keep the stages and fusions but compile and run
  # faster (tests, CPU demos); ImageNet weights need the defaults.
  config.model.hrnet_modules = (1, 4, 3)
  config.model.hrnet_blocks = 4
  config.model.pooling = "avgmax"  # 'avg' | 'max' | 'avgmax' (Table V)
  # Table IV: 'vdsr_ca' | 'vdsr' | 'rcan' | 'srcnn' | 'bicubic' | 'none'.
  # 'bicubic' and 'none' have no SR network and no L_SR; 'bicubic'
  # up-samples the LR image with PIL bicubic, 'none' with
  # data.lr_interpolation (models/factory.py).
  config.model.sr_module = "vdsr_ca"
  config.model.sr_features = 64  # VDSR-CA and RCAN width (SPEC 1.1)
  config.model.sr_blocks = 18  # VDSR-CA middle blocks (SPEC 1.1)
  # VDSR-CA's channel attention squeezes sr_features / ca_reduction
  # channels. The paper sets "r = 4", RCAN's reduction ratio: 64 -> 16
  # (705,312 parameters). The released code squeezes 64 -> 4 (r = 16,
  # 677,448 parameters), the layout of its weights.
  config.model.ca_reduction = 16 if released else 4
  config.model.srcnn_features = (64, 32)  # SRCNN 9-5-5 (Dong et al.)
  # RCAN (Zhang et al. 2018): residual groups, RCABs per group, channel-
  # attention reduction; 10 x 20 at 64 channels is 15.3 M parameters.
  config.model.rcan_groups = 10
  config.model.rcan_blocks = 20
  config.model.rcan_reduction = 16
  # ResNet-50 (backbone=resnet50): stem width and Bottlenecks per layer;
  # torchvision's ImageNet weights need the defaults.
  config.model.resnet_width = 64
  config.model.resnet_blocks = (3, 4, 6, 3)
  config.model.dropout_rate = 0.5
  config.model.compute_dtype = "float32"  # 'bfloat16' on accelerators

  config.data = ml_collections.ConfigDict()
  config.data.name = ""
  config.data.root = ""  # the user's copy of the published layout
  config.data.lr_root = ""  # optional pre-built MLR folder (Market layout)
  config.data.build_dir = ""  # empty: WORKDIR/data
  config.data.seed = 0  # MLR construction and splits
  config.data.split_index = 0
  config.data.image_size = (256, 128)
  config.data.p = 6 if released else 4
  config.data.k = 4 if released else 6
  config.data.lr_interpolation = "bilinear"  # or 'bicubic'
  config.data.pad = 10  # zero padding before the random crop (SPEC 3)
  config.data.worker_count = 0
  # 'tfds': pack the benchmark once into ArrayRecord files read through
  # grain; 'files': read the image files directly.
  config.data.source = "tfds"
  config.data.skip_unreadable = False
  # Dataset-specific reader/builder options (data_pipelines.benchmarks
  # DEFAULT_OPTIONS); each benchmark config lists the ones it exposes.
  config.data.options = ml_collections.ConfigDict()
  config.data.options.factors = (2, 3, 4)  # LR down-sampling factors r

  config.loss = ml_collections.ConfigDict()
  config.loss.ce_weight = 1.15
  config.loss.label_smoothing = 0.1
  config.loss.triplet_weight = 0.2
  config.loss.triplet_margin = 0.3 if released else 0.1
  # Phase 2's L_TOTAL = id_weight * L_ID + sr_weight * L_SR + ps_weight *
  # L_PS; 0 turns a term off (Tables II-IV). id_weight=0 with ps_weight=0
  # trains VDSR-CA by L_SR alone (Table III's "Solo SR"). Phase 1 is L_ID.
  config.loss.id_weight = 1.0
  config.loss.sr_weight = 0.5  # 0 turns L_SR off (Table II)
  config.loss.ps_weight = 0.5  # 0 turns L_PS off (Table II)
  config.loss.ps_features = (
      ("seq1", "seq2", "seq3", "seq4", "seq5", "logits") if released
      else ("seq1", "seq4", "seq5", "logits"))

  config.optim = ml_collections.ConfigDict()
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 5e-4
  config.optim.epochs = 71 if released else 70
  config.optim.decay_epochs = 30
  config.optim.decay_factor = 0.1
  config.optim.warmup_epochs = 5 if released else 0
  config.optim.warmup_lr = 3e-4
  groups = {name: dict(group) for name, group in _PAPER_GROUPS.items()}
  if released:  # its training loop overwrites every group's LR with one value
    groups["sr"]["lr"] = groups["hrnet"]["lr"]
  config.optim.groups = groups

  config.train = ml_collections.ConfigDict()
  config.train.log_every_steps = 20
  config.train.checkpoint_every_steps = 500
  config.train.max_checkpoints_to_keep = 2
  # Phase-1 epochs; None means optim.epochs.
  config.train.phase1_epochs = ml_collections.FieldReference(None, field_type=int)
  config.train.phase2_epochs = ml_collections.FieldReference(None, field_type=int)

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 64
  config.eval.max_rank = 50
  config.eval.trials = 10  # single-shot protocols
  config.eval.ap_convention = "torchreid"  # or 'released'
  config.eval.ranked_list_queries = 6
  config.eval.sr_quality = True
  # Matchers that learn nothing (evaluation/baselines.py), on the same
  # queries: what the trained model adds.
  config.eval.baselines = True
  # k-reciprocal re-ranking (Zhong et al., CVPR 2017): True adds "+RR"
  # figures beside the plain ones; the paper's k1, k2 and lambda.
  config.eval.rerank = False
  config.eval.rerank_k1 = 20
  config.eval.rerank_k2 = 6
  config.eval.rerank_lambda = 0.3
  return config
