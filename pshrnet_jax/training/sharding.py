"""Data parallelism: the global batch split over the mesh axis "data",
everything else replicated. XLA inserts the cross-device reductions, so
BatchNorm statistics and triplet mining see the whole global batch; each
process supplies its local rows of it."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from pshrnet_jax.errors import ConfigError

DATA_AXIS = "data"


def make_data_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over all (or the first `num_devices`) devices, axis "data".
  `Auto` axes: jit propagates shardings (Explicit ones, jax 0.10's default,
  would make every op's sharding part of its type)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ConfigError(
          f"Asked for a mesh of {num_devices} devices, but only "
          f"{len(devices)} are visible ({devices[0].platform}).")
    devices = devices[:num_devices]
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over "data"."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
  """Raises if the global batch does not split evenly over the devices."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ConfigError(
        f"The global batch of {global_batch_size} pairs (P x K) does not "
        f"divide over {n} devices; choose P x K as a multiple of {n}.")
  if global_batch_size % jax.process_count():
    raise ConfigError(
        f"The global batch of {global_batch_size} does not divide over "
        f"{jax.process_count()} processes.")


def put_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's rows of a batch into global, batch-sharded arrays."""
  sharding = batch_sharded(mesh)
  return {name: jax.make_array_from_process_local_data(sharding,
                                                       np.asarray(value))
          for name, value in batch.items()}


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree (the same values in every process) on every device;
  with several processes each builds its own devices' copies (device_put
  cannot target another process's devices)."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = put(jax.random.key_data(x))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  return jax.tree.map(put, tree)
