"""PS-HRNet in JAX/Flax: cross-resolution person re-identification.

| subpackage / module | concern |
|---|---|
| `main`, `driver` | the command line and the run behind it |
| `models/` | Flax networks and the factory that builds them from a config |
| `training/` | steps, losses, optimiser, checkpoints, sharding, the loop |
| `evaluation/` | metrics, features, SR quality, reports, pictures |
| `inference/`, `search`, `extract`, `export` | a trained model on one's own photos, and exported |
| `convert/` | PyTorch `.pth` -> Flax variables, Orbax variable folders |
| `errors` | every bad-input error type (the data ones from `data_pipelines.errors`), and the tuple `main` catches |
| `workdir_layout`, `console` | where a run keeps what; what the terminal shows |

The datasets and input pipelines are the package `data_pipelines`, the
lowest layer, which imports nothing from this one (atomic folder writes live
there too). `from pshrnet_jax import load_model` rebuilds a trained model
from its folder (`inference/loading.py`).
"""

__version__ = "0.2.0"


def load_model(path, which=None):
  """A trained model from its folder: see `pshrnet_jax.inference.loading`."""
  from pshrnet_jax.inference import loading  # pylint: disable=g-import-not-at-top
  return loading.load_model(path, which)
