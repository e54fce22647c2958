"""Your own data (ROOT/<identity>/<image>): a seeded split by identity.

    python -m pshrnet_jax.main --config=configs/folder.py --workdir=DIR \
        --config.data.root=/path/to/your/images --config.init_from=/path/to/hrnet_w32

Also ROOT/<camera>/<identity>/<image>; multi-shot evaluation. Without
camera folders the evaluation removes only the query image itself
from its gallery (data_pipelines/readers/folder.py); results.json says so.
"""

from configs import base


def get_config(preset: str = "paper"):
  config = base.get_base_config(preset)
  config.data.name = "folder"
  config.data.options.train_fraction = 0.5  # of the identities
  config.data.options.query_fraction = 0.2  # of each test identity's images
  return config
