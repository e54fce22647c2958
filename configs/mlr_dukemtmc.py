"""MLR-DukeMTMC-reID (SPEC 5): 702 / 702 identities (+ distractors), LR queries, multi-shot.

    python -m pshrnet_jax.main --config=configs/mlr_dukemtmc.py --workdir=DIR \
        --config.data.root=/path/to/dataset --config.init_from=/path/to/hrnet_w32
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "mlr_dukemtmc"
  return config
