"""Multi-process start-up: one process per host, as on TPU pods and GPU clusters.

`initialize()` is called by `dynjax.main` before any JAX computation:

- Explicit (local loopback tests, custom clusters): the environment variables
  `DYNJAX_COORDINATOR_ADDRESS` (host:port), `DYNJAX_NUM_PROCESSES` and
  `DYNJAX_PROCESS_ID` (as set by `python -m dynjax.launch_local`), or the same
  values passed as arguments.
- Managed clusters (Cloud TPU pods, Slurm, Open MPI, ...): `jax.distributed.
  initialize()` with no arguments discovers everything itself; it is attempted
  when such an environment is detected.
- Otherwise a single process runs and nothing is initialised.

On the CPU backend, cross-process collectives need gloo, enabled here.
"""

from __future__ import annotations

import os

import jax
from absl import logging

ENV_COORDINATOR = "DYNJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "DYNJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "DYNJAX_PROCESS_ID"

# Variables that describe a multi-process launch JAX can auto-detect.
_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")
_WORLD_SIZE_ENV = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")

_initialized = False


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name} must be an integer, got {value!r}") from None


def cluster_launch() -> bool:
  """True when the environment describes a multi-process cluster launch."""
  if any(os.environ.get(k) for k in _COORDINATOR_ENV):
    return True
  if any((_env_int(k) or 1) > 1 for k in _WORLD_SIZE_ENV):
    return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the multi-process job if one is configured; returns True if so."""
  global _initialized
  if _initialized:
    return True
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
  explicit = coordinator_address is not None
  if explicit:
    if num_processes is None or process_id is None:
      raise ValueError(f"{ENV_COORDINATOR} is set, so {ENV_NUM_PROCESSES} and "
                       f"{ENV_PROCESS_ID} must be set too")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process id {process_id} outside [0, {num_processes})")
    if num_processes == 1:
      return False
  elif not cluster_launch():
    return False
  if _platform_is_cpu():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
  _initialized = True
  logging.info("joined a %d-process job as process %d", jax.process_count(), jax.process_index())
  return True


def _platform_is_cpu() -> bool:
  platforms = os.environ.get("JAX_PLATFORMS", "") or os.environ.get("JAX_PLATFORM_NAME", "")
  return platforms.split(",")[0].strip().lower() == "cpu"
