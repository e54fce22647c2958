"""Market-1501 HR-only (paper Table VI, HRNet-ReID): phase 1 and evaluation of the HR model.

    python -m pshrnet_jax.main --config=configs/hr_market1501.py --workdir=DIR \
        --config.data.root=/path/to/dataset --config.init_from=/path/to/hrnet_w32
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "market1501"
  # No LR side: 'all' runs phase 1 and evaluates the HR model on HR queries.
  config.hr_only = True
  del config.data.options.factors  # nothing is down-sampled
  return config
