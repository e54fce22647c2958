"""compile_stats: JAX's compile events, counted and summed per interval."""

import jax
import jax.numpy as jnp
import pytest
from jax import monitoring

from pshrnet_jax import compile_stats

# JAX's monitoring events for tracing, lowering, the backend compile and a
# persistent-cache hit: what compile_stats listens to.
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_BACKEND = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


@pytest.fixture(autouse=True)
def _installed():
  compile_stats.install()
  compile_stats.install()  # Idempotent: listeners are registered once.


def test_sums_events_by_hand():
  before = compile_stats.snapshot()
  monitoring.record_event_duration_secs(_TRACE, 0.25)
  monitoring.record_event_duration_secs(_LOWER, 0.5)
  monitoring.record_event_duration_secs(_BACKEND, 2.0,
                                        fun_name="jit(step)")
  # A cache hit is recorded inside the compile it belongs to.
  monitoring.record_event(_CACHE_HIT)
  monitoring.record_event_duration_secs(_BACKEND, 0.125,
                                        fun_name="jit(eval)")
  monitoring.record_event_duration_secs(_BACKEND, 1.0,
                                        fun_name="jit(init)")
  stats = compile_stats.since(before)
  assert (stats.programs, stats.cache_hits) == (3, 1)
  assert stats.compile_s == pytest.approx(3.125)
  assert stats.total_s == pytest.approx(3.875)
  assert stats.slowest == ((2.0, "jit(step)"), (1.0, "jit(init)"),
                           (0.125, "jit(eval)"))
  assert stats.describe() == (
      "3.9 s compiling: 3 programs (1 from the cache) in 3.1 s, tracing "
      "0.2 s, lowering 0.5 s; slowest: jit(step) 2.0 s, jit(init) 1.0 s, "
      "jit(eval) 0.1 s")
  # Intervals do not leak into each other.
  assert compile_stats.since(compile_stats.snapshot()).programs == 0


def test_counts_one_real_compile_under_its_name():
  def thrice_plus_one(x):
    return x * 3.0 + 1.0
  lowered = jax.jit(thrice_plus_one).lower(jnp.zeros((3,)))
  before = compile_stats.snapshot()
  lowered.compile()
  stats = compile_stats.since(before)
  assert stats.programs == 1
  assert stats.compile_s > 0
  assert stats.slowest[0][1] == "jit(thrice_plus_one)"
