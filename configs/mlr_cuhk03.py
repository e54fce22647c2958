"""MLR-CUHK03 (SPEC 5): 1367 / 100 identities, one camera of each pair down-sampled, single-shot.

    python -m pshrnet_jax.main --config=configs/mlr_cuhk03.py --workdir=DIR \
        --config.data.root=/path/to/dataset --config.init_from=/path/to/hrnet_w32
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "mlr_cuhk03"
  config.data.options.cuhk03_images = "labeled"  # or 'detected'
  config.data.options.lr_camera_in_pair = 1  # which camera of each pair is LR
  return config
