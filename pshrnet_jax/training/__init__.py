"""Training: two phases (`phases`), one loop (`loop`). Nothing here imports
`pshrnet_jax.evaluation`."""
