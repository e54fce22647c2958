"""layers.materialize and layers.compiler_options: the fence holds on CPU."""

import jax
import jax.numpy as jnp
import numpy as np

from pshrnet_jax.models import layers


def test_value_and_gradient_pass_through():
  x = jnp.array([-1.5, 0.0, 2.0])
  np.testing.assert_array_equal(layers.materialize(x), x)
  grad = jax.grad(lambda v: jnp.sum(layers.materialize(v) ** 2))(x)
  np.testing.assert_array_equal(grad, 2 * x)


def test_the_barrier_reaches_the_compiled_block_only_with_the_options():
  block = layers.BasicBlock(4)
  x = jnp.ones((1, 4, 4, 4))
  variables = block.init(jax.random.key(0), x)

  def loss(v, x_):
    return jnp.sum(block.apply(v, x_) ** 2)

  def compiled_text(**kw):
    return jax.jit(jax.grad(loss), **kw).lower(variables, x).compile(
    ).as_text()
  # XLA:CPU deletes optimisation barriers before fusing unless the pass is
  # off; then the block's output stays a buffer of its own.
  assert "opt-barrier" not in compiled_text()
  assert "opt-barrier" in compiled_text(
      compiler_options=layers.compiler_options())
