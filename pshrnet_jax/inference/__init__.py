"""Using a trained model: `loading` (a folder -> model, variables, info),
`gallery` (embedding and searching photos), `serving` (a jax.export artefact);
the commands are `python -m pshrnet_jax.search`, `.extract` and `.export`
(`commands`: what they share before they import JAX)."""
