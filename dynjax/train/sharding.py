"""Data-parallel sharding: a 1-D device mesh, batches split on its `data` axis,
train state replicated; multi-process start-up.

No `pmap`: the step is one `jax.jit` over global arrays. Each process loads
its own share of a batch; `global_batch` assembles the global `jax.Array`
with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Environment variables that mean "this job runs several processes".
_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_WORLD_SIZE_ENV = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def wants_distributed() -> bool:
  """True when the environment describes a multi-process launch."""
  if any(os.environ.get(k) for k in _MULTIPROCESS_ENV):
    return True
  if any(int(os.environ.get(k, "1") or 1) > 1 for k in _WORLD_SIZE_ENV):
    return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` for multi-process runs.

  Must run before any JAX computation. With no arguments it initialises only
  when `wants_distributed()` (TPU pods, SLURM, MPI and explicit coordinator
  variables are auto-detected by JAX). Returns True if it initialised.
  """
  explicit = coordinator_address is not None or num_processes is not None
  if not explicit and not wants_distributed():
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True


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
