"""Using a trained model: load it from its folder, embed and search photos,
export it for serving.

| module | what it holds |
|---|---|
| `loading` | `load_model(path)`: a workdir, an export or a converted checkpoint -> (model, variables, info) |
| `gallery` | features of one's own photos, features files, search |
| `serving` | the feature extractor as a `jax.export` artefact |

The command lines are `python -m pshrnet_jax.search`, `pshrnet_jax.extract`
and `pshrnet_jax.export`.
"""
