"""Dataset readers, the MLR builder and the grain input pipelines."""
