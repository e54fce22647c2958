"""Shared test set-up: a persistent XLA compilation cache and absl flags.

Compile time dominates this suite on a CPU (a tiny HRNet takes 15-30 s to
compile), so every test process reuses compiled executables across runs
through JAX's persistent cache, and expensive compiled functions are shared
through session-scoped fixtures in the test modules.
"""

import os

import jax
from absl import flags

_CACHE_DIR = os.environ.get(
    "PSHRNET_JAX_TEST_CACHE",
    os.path.join(os.path.expanduser("~"), ".cache", "pshrnet_jax", "xla"),
)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# grain worker processes and absl-based code read flags; tests run without
# absl.app.run, so mark them parsed once here.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
