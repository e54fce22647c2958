"""MLR-VIPeR (SPEC 5): 316 / 316 random identities, camera B down-sampled, single-shot, 10 trials.

    python -m pshrnet_jax.main --config=configs/mlr_viper.py --workdir=DIR \
        --config.data.root=/path/to/dataset --config.init_from=/path/to/hrnet_w32
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "mlr_viper"
  config.data.options.lr_camera = "cam_b"
  return config
