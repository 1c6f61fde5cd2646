"""Data-parallel sharding: a 1-D device mesh, batches split on its `data` axis,
train state replicated. Multi-process start-up is `dynjax.distributed`.

No `pmap`: the step is one `jax.jit` over global arrays. Each process loads
its own share of a batch; `global_batch` assembles the global `jax.Array`
with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices, all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, name: str = "batch_size") -> None:
  """A global batch must split evenly over the mesh's devices."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f"{name} ({global_batch}) must be divisible by the number of "
                     f"devices ({n}); the global batch is split evenly over them")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays sharded on the `data` axis.

  Each process passes its own `[B / process_count, ...]` rows; the global
  batch has `B` rows in process order.
  """
  sharding = batch_sharding(mesh)
  out = {}
  for name, value in local.items():
    value = np.asarray(value)
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    check_batch_size(global_shape[0], mesh)
    out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree on every device of `mesh` (identical on all hosts)."""
  return jax.device_put(tree, replicated(mesh))
