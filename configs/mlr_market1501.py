"""MLR-Market-1501 (SPEC 5): 751 / 750 identities, LR queries, multi-shot Market protocol.

    python -m pshrnet_jax.main --config=configs/mlr_market1501.py --workdir=DIR \
        --config.data.root=/path/to/dataset --config.init_from=/path/to/hrnet_w32
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "mlr_market1501"
  return config
