"""PS-HRNet in JAX/Flax: cross-resolution person re-identification."""

__version__ = "0.1.0"
