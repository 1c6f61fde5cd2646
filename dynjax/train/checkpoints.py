"""Orbax checkpoints: every N steps, on preemption, keep the latest K, resume
exactly, and initialise from another run.

Each checkpoint holds two items: `state` (step, params, batch stats, optimizer
state, RNG key) and `meta` (JSON: the data position and the experiment's
identity). Resuming restores both; a workdir whose checkpoint belongs to a
different experiment is refused with a one-line error.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from orbax.checkpoint import checkpoint_managers as policies

from dynjax.train.config_check import ConfigError

CHECKPOINT_SUBDIR = "checkpoints"
# Config fields that define an experiment; a restart must not change them.
IDENTITY_FIELDS = ("model", "model_kwargs", "num_classes", "dynamic", "dataset.name",
                   "batch_size", "seed")


def experiment_identity(config: Any) -> dict[str, Any]:
  """The JSON-able values of `IDENTITY_FIELDS`."""
  out = {}
  for field in IDENTITY_FIELDS:
    value = config
    for part in field.split("."):
      value = value[part]
    out[field] = value.to_dict() if hasattr(value, "to_dict") else value
  return out


class Checkpointer:
  """Wraps an orbax `CheckpointManager` for one workdir.

  Args:
    workdir: the run's directory (checkpoints go to `workdir/checkpoints`).
    every_steps: save interval in steps.
    keep: number of checkpoints kept (latest K).
    identity: `experiment_identity(config)`.
  """

  def __init__(self, workdir: str, every_steps: int, keep: int, identity: dict[str, Any]):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_SUBDIR))
    self.identity = identity
    policy = policies.AnySavePolicy([policies.FixedIntervalPolicy(every_steps),
                                     policies.PreemptionCheckpointingPolicy()])
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_decision_policy=policy,
                                           create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))
    self._signalled = threading.Event()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def check_identity(self) -> None:
    """Raises `ConfigError` if the latest checkpoint is another experiment's."""
    step = self.latest_step()
    if step is None:
      return
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    stored = meta.get("identity", {})
    differs = [k for k in IDENTITY_FIELDS if _canonical(stored.get(k)) != _canonical(self.identity[k])]
    if differs:
      k = differs[0]
      raise ConfigError(
          f"workdir {os.path.dirname(self.directory)!r} holds a checkpoint of another "
          f"experiment ({k}: {stored.get(k)!r} there, {self.identity[k]!r} now; fields "
          f"that must match: {list(IDENTITY_FIELDS)}); use a fresh --workdir")

  def restore(self, arrays: Any) -> tuple[Any, dict] | None:
    """Restores the latest checkpoint into the structure/sharding of `arrays`.

    Returns `(arrays, meta)` or None when there is no checkpoint.
    """
    step = self.latest_step()
    if step is None:
      return None
    self.check_identity()
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), arrays)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def save(self, step: int, arrays: Any, meta: dict, force: bool = False) -> bool:
    """Saves if the interval / preemption policy (or `force`) says so."""
    meta = dict(meta, identity=self.identity)
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=force)

  def reached_preemption(self, step: int) -> bool:
    """True on a preemption notice: the cluster's (orbax / JAX preemption sync
    point) or, in single-process runs, a SIGTERM caught by `watch_sigterm`."""
    return self._signalled.is_set() or self.manager.reached_preemption(step)

  def watch_sigterm(self) -> None:
    """Turns SIGTERM into a preemption notice (single-process runs only; the
    multi-process path is JAX's preemption service)."""
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
      del signum, frame
      self._signalled.set()
      signal.signal(signal.SIGTERM, previous)

    signal.signal(signal.SIGTERM, handler)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _canonical(value: Any) -> Any:
  """JSON round-trip normal form (tuples -> lists) for comparisons."""
  if isinstance(value, dict):
    return {k: _canonical(v) for k, v in sorted(value.items())}
  if isinstance(value, (list, tuple)):
    return [_canonical(v) for v in value]
  return value


def _resolve_state_dir(path: str) -> str:
  """A workdir, a checkpoints dir or a step dir -> the step's `state` dir."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    path = os.path.join(path, CHECKPOINT_SUBDIR)
  if os.path.isdir(os.path.join(path, "state")):
    return os.path.join(path, "state")
  steps = sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []
  if not steps:
    raise ConfigError(f"init_from {path!r} holds no dynjax checkpoint (expected a workdir, "
                      "its checkpoints/ directory or one step directory)")
  return os.path.join(path, str(steps[-1]), "state")


def load_checkpoint_variables(path: str) -> dict[str, Any]:
  """`{"params": ..., "batch_stats": ...}` (numpy) from another run's checkpoint."""
  state_dir = _resolve_state_dir(path)
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(state_dir)
  tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  restored = checkpointer.restore(state_dir, restore_args=restore_args)
  return {"params": restored["params"], "batch_stats": restored.get("batch_stats") or {}}


def merge_matching(target: Any, source: Any) -> tuple[Any, int, int]:
  """Copies leaves of `source` into `target` where path and shape match.

  Like PyTorch's `load_state_dict(strict=False)`: e.g. FTWT's dynamic stage
  loads a dense baseline and keeps its freshly initialised gates.

  Returns:
    `(merged, loaded, total)` leaf counts.
  """
  flat_target = traverse_util.flatten_dict(target) if target else {}
  flat_source = traverse_util.flatten_dict(source) if source else {}
  merged, loaded = {}, 0
  for path, value in flat_target.items():
    candidate = flat_source.get(path)
    if candidate is not None and tuple(np.shape(candidate)) == tuple(value.shape):
      merged[path] = np.asarray(candidate, dtype=value.dtype)
      loaded += 1
    else:
      merged[path] = value
  return traverse_util.unflatten_dict(merged), loaded, len(flat_target)
