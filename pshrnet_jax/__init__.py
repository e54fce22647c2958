"""PS-HRNet in JAX/Flax: cross-resolution person re-identification.

| subpackage / module | concern |
|---|---|
| `main`, `driver` | the command line and the run behind it |
| `models/` | Flax networks and the factory that builds them from a config |
| `training/` | steps, losses, optimiser, checkpoints, sharding, the loop |
| `evaluation/` | metrics, features, SR quality, reports, pictures |
| `inference/`, `search`, `extract`, `export` | a trained model on one's own photos, and exported |
| `convert/` | PyTorch `.pth` -> Flax variables, Orbax variable folders |
| `errors` | every bad-input error type, and the tuple `main` catches |
| `atomic`, `workdir_layout`, `console` | atomic folder writes; where a run keeps what; what the terminal shows |

`from pshrnet_jax import load_model` rebuilds a trained model from its
folder (`inference/loading.py`); `from pshrnet_jax import features` is kept
for code written against the first layout (`pshrnet_jax.evaluation.features`).
"""

import importlib

__version__ = "0.2.0"

_MOVED = {"features": "pshrnet_jax.evaluation.features"}


def load_model(path, which=None):
  """A trained model from its folder: see `pshrnet_jax.inference.loading`."""
  from pshrnet_jax.inference import loading  # pylint: disable=g-import-not-at-top
  return loading.load_model(path, which)


def __getattr__(name: str):
  if name in _MOVED:
    return importlib.import_module(_MOVED[name])
  raise AttributeError(f"module 'pshrnet_jax' has no attribute {name!r}")
