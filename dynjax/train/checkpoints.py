"""Orbax checkpoints: every N steps, on preemption, keep the latest K, resume
exactly, and initialise from another run.

Each checkpoint holds two items: `state` (step, params, batch stats, optimizer
state, RNG key) and `meta` (JSON: the data position and the experiment's
identity). Resuming restores both; a workdir whose checkpoint belongs to a
different experiment is refused with a one-line error.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from dynjax.errors import UserError, describe
from dynjax.train.config_check import ConfigError

CHECKPOINT_SUBDIR = "checkpoints"
DAMAGED_SUBDIR = "damaged_checkpoints"
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

  The training loop decides when to save (interval, preemption, last step);
  `save` always writes.

  Args:
    workdir: the run's directory (checkpoints go to `workdir/checkpoints`).
    keep: number of checkpoints kept (latest K).
    identity: `experiment_identity(config)`.
  """

  def __init__(self, workdir: str, keep: int, identity: dict[str, Any]):
    check_workdir(workdir)
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_SUBDIR))
    self.identity = identity
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))
    self._signalled = threading.Event()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _steps_newest_first(self) -> list[int]:
    return sorted(self.manager.all_steps(), reverse=True)

  def _read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def check_identity(self) -> None:
    """Raises `ConfigError` if the newest readable checkpoint is another
    experiment's (unreadable ones are left to `restore`, which reports them)."""
    for step in self._steps_newest_first():
      try:
        meta = self._read_meta(step)
      except Exception:  # pylint: disable=broad-except
        continue
      stored = meta.get("identity", {})
      differs = [k for k in IDENTITY_FIELDS
                 if _canonical(stored.get(k)) != _canonical(self.identity[k])]
      if differs:
        k = differs[0]
        raise ConfigError(
            f"workdir {os.path.dirname(self.directory)!r} holds a checkpoint of another "
            f"experiment ({k}: {stored.get(k)!r} there, {self.identity[k]!r} now; fields "
            f"that must match: {list(IDENTITY_FIELDS)}); use a fresh --workdir")
      return

  def restore(self, arrays: Any) -> tuple[Any, dict] | None:
    """Restores the newest checkpoint that restores, into the structure and
    sharding of `arrays`; newer ones that fail are reported and set aside.

    Returns:
      `(arrays, meta)`, or None when there is no checkpoint.

    Raises:
      UserError: there are checkpoints but none restores.
    """
    steps = self._steps_newest_first()
    if not steps:
      return None
    self.check_identity()
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), arrays)
    failed = []
    for step in steps:
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        failed.append((step, e))
        continue
      if failed:
        moved = self._set_aside([s for s, _ in failed])
        logging.warning("checkpoint step(s) %s in %s cannot be restored (%s); resuming from "
                        "step %d, the newest that restores (the damaged ones are in %s)",
                        [s for s, _ in failed], self.directory, describe(failed[0][1])[:160],
                        step, moved)
      return restored["state"], restored["meta"]
    step, error = failed[0]
    self.close()
    raise UserError(
        f"no checkpoint in {self.directory!r} can be restored (steps {steps}; step {step}: "
        f"{describe(error)[:200]}); move that directory away to train from scratch")

  def _set_aside(self, steps: list[int]) -> str:
    """Moves damaged step directories to `workdir/damaged_checkpoints/` (so the
    run can save those steps again and nothing is deleted)."""
    target = os.path.join(os.path.dirname(self.directory), DAMAGED_SUBDIR)
    if jax.process_index() == 0:
      os.makedirs(target, exist_ok=True)
      for step in steps:
        destination = os.path.join(target, str(step))
        n = 1
        while os.path.exists(destination):
          destination, n = os.path.join(target, f"{step}.{n}"), n + 1
        shutil.move(os.path.join(self.directory, str(step)), destination)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("dynjax_set_aside_damaged_checkpoints")
    self.manager.reload()
    return target

  def save(self, step: int, arrays: Any, meta: dict) -> bool:
    """Saves `arrays` and `meta` (plus the experiment identity) as `step`."""
    meta = dict(meta, identity=self.identity)
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)

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


def check_workdir(workdir: str) -> None:
  """Raises `UserError` if `workdir` cannot be created or written (before
  anything is compiled). Remote paths (`gs://...`) are left to orbax."""
  if "://" in workdir:
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir {workdir!r} is a file, not a directory; choose another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".dynjax_write_test"):
      pass
  except OSError as e:
    raise UserError(f"--workdir {workdir!r} cannot be written ({e.strerror or describe(e)}); "
                    "choose a directory you can write to") from e


def has_checkpoint(workdir: str) -> bool:
  """True if `workdir/checkpoints` holds a finished step directory."""
  directory = os.path.join(workdir, CHECKPOINT_SUBDIR)
  return os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory))


TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")


def check_init_from(path: str) -> None:
  """Raises `ConfigError` if `init_from` names nothing loadable (cheap: file
  system only, before anything is compiled)."""
  if "://" in path:
    return
  if path.endswith(TORCH_SUFFIXES):
    if not os.path.isfile(path):
      raise ConfigError(f"init_from {path!r} does not exist; expected a torchvision "
                        "state_dict file or another run's workdir")
    return
  _resolve_state_dir(path)


def _resolve_state_dir(path: str) -> str:
  """A workdir, a checkpoints dir or a step dir -> the step's `state` dir."""
  if not os.path.exists(path):
    raise ConfigError(f"init_from {path!r} does not exist; expected another run's workdir, "
                      "its checkpoints/ directory, one step directory or a .pth file")
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
  try:
    metadata = checkpointer.metadata(state_dir)
    tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(state_dir, restore_args=restore_args)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"init_from {path!r}: the checkpoint {state_dir!r} cannot be read "
                    f"({describe(e)[:200]})") from e
  if not isinstance(restored, dict) or "params" not in restored:
    raise UserError(f"init_from {path!r}: {state_dir!r} is not a dynjax training state "
                    "(no params)")
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
