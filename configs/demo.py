"""The built-in synthetic cross-resolution set, sized for a 2-core CPU.

    python -m pshrnet_jax.main --config=configs/demo.py --workdir=workdirs/demo

Generates procedurally drawn people seen by 3 cameras (data_pipelines/
builders/synthetic.py: 120 training and 40 test identities, drawn at 64x32),
down-samples the queries and the training images by r in {2, 3, 4}, then
runs phase 1 (teacher), phase 2 (student) and evaluation. Everything the
paper's configs use is here, at toy sizes: a narrow HRNet with all four
resolution branches and their fusions but one module per stage and one block
per branch, a narrow VDSR-CA, 64x32 network input, 28 epochs per phase from
random weights (about 7 minutes of training on a 2-core CPU).
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "demo"
  config.data.image_size = (64, 32)
  config.data.source = "files"
  config.data.pad = 3  # SPEC's 10 pixels at 256x128, scaled to 64x32
  config.model.width = 8
  config.model.head_planes = (8, 16, 32, 64)
  # HRNet-W32 has (1, 4, 3) modules in stages 2-4 and 4 blocks per branch;
  # one of each keeps every stage and fusion at a fraction of the compute.
  config.model.hrnet_modules = (1, 1, 1)
  config.model.hrnet_blocks = 1
  config.model.sr_features = 16
  config.model.sr_blocks = 6
  # The ablations' networks (scripts/reproduce.py --config=configs/demo.py),
  # as narrow: ResNet-50 at a quarter width, SRCNN and RCAN near VDSR-CA's
  # size (RCAN's 10 x 20 blocks would be ~20x VDSR-CA's compute).
  config.model.resnet_width = 16
  config.model.srcnn_features = (16, 8)
  config.model.rcan_groups = 2
  config.model.rcan_blocks = 3
  config.model.rcan_reduction = 4
  config.optim.epochs = 28
  config.optim.decay_epochs = 20
  # From random weights (no ImageNet HRNet here), at the paper's 10:1 ratio.
  config.init_from_required = False
  config.optim.groups.hrnet.lr = 0.01
  config.optim.groups.sr.lr = 0.001
  # SPEC 3's option: the student's HRNet-ReID starts from the phase-1 teacher
  # (the released code starts it from ImageNet weights, which the demo does
  # not have; from random weights the student needs more epochs than a CPU
  # demo has).
  config.student_init = "teacher"
  config.train.log_every_steps = 30
  config.train.checkpoint_every_steps = 120
  config.eval.batch_size = 120
  config.eval.trials = 10
  return config
