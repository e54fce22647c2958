"""PS-HRNet in JAX/Flax: cross-resolution person re-identification.

One subpackage per concern (models, training, evaluation, inference,
convert); the data pipelines are the package `data_pipelines`; WORKSPACE.md
maps the code. `from pshrnet_jax import load_model` rebuilds a trained model
from its folder.
"""

__version__ = "0.2.0"


def load_model(path, which=None):
  """A trained model from its folder: see `pshrnet_jax.inference.loading`."""
  from pshrnet_jax.inference import loading  # pylint: disable=g-import-not-at-top
  return loading.load_model(path, which)
