"""CAVIAR (SPEC 5): genuine LR camera; 25 / 25 of the 50 two-camera identities, single-shot.

    python -m pshrnet_jax.main --config=configs/caviar.py --workdir=DIR \
        --config.data.root=/path/to/dataset --config.init_from=/path/to/hrnet_w32
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "caviar"
  config.data.options.lr_camera = "auto"  # the camera with smaller images
  # SPEC 5: the 22 people seen by one camera do not train (True adds them).
  config.data.options.single_camera_train = False
  # The training people's genuine LR images train the student's L_ID only
  # (no HR original: no L_SR, no L_PS, not in phase 1).
  config.data.options.genuine_lr_train = True
  return config
