"""Optimizers: one optax chain per parameter group (backbone, gates).

- SGD with momentum (PyTorch semantics: coupled weight decay `g + wd * w`
  before momentum, dampening 0) or RMSProp (TF1 semantics: epsilon inside the
  square root, squared-gradient accumulator initialised to 1, learning rate
  applied before momentum; docs/methods.md#optimisers).
- Schedules `constant`, `step` (x `decay_factor` at epoch milestones), `cosine`
  (to 0 at the end of training), stepped per epoch (PyTorch schedulers) or per
  step, with an optional linear warm-up.
- Gradient clipping by global norm, per group.
- `optax.multi_transform` sends gate parameters (`is_gate_param`) to
  `config.gate_optimizer` (FTWT: SGD 0.1 constant, no decay; docs/methods.md#optimisers).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dynjax.layers.gating import is_gate_param

BACKBONE, GATE = "backbone", "gate"
OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
SCHEDULE_UNITS = ("epoch", "step")
WEIGHT_DECAY_MODES = ("coupled", "l2_loss")


def learning_rate_schedule(opt: Any, steps_per_epoch: int, num_epochs: int) -> optax.Schedule:
  """The learning rate as a function of the optimizer step count.

  Args:
    opt: an optimizer ConfigDict (configs/default.py::optimizer_config).
    steps_per_epoch: training steps per epoch.
    num_epochs: total epochs (the cosine horizon).
  """
  base = float(opt.learning_rate)
  milestones = jnp.asarray(sorted(opt.milestones) if opt.milestones else [0], jnp.float32)
  num_milestones = len(opt.milestones or ())
  warmup_steps = float(opt.warmup_epochs) * steps_per_epoch

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    epoch = count / steps_per_epoch
    if opt.schedule_unit == "epoch":
      epoch = jnp.floor(epoch)
    if opt.schedule == "constant":
      lr = jnp.full((), base)
    elif opt.schedule == "step":
      passed = jnp.sum(epoch >= milestones) if num_milestones else 0
      lr = base * jnp.power(opt.decay_factor, passed)
    elif opt.schedule == "cosine":
      progress = jnp.clip(epoch / num_epochs, 0.0, 1.0)
      lr = base * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    else:
      raise ValueError(f"optimizer.schedule must be one of {list(SCHEDULES)}, "
                       f"got {opt.schedule!r}")
    if warmup_steps > 0:
      lr = lr * jnp.minimum(1.0, (count + 1.0) / warmup_steps)
    return lr

  return schedule


def group_optimizer(opt: Any, steps_per_epoch: int,
                    num_epochs: int) -> optax.GradientTransformation:
  """One group's chain: clip -> coupled weight decay -> SGD / RMSProp."""
  lr = learning_rate_schedule(opt, steps_per_epoch, num_epochs)
  momentum = float(opt.momentum) or None
  parts = []
  if opt.clip_norm:
    parts.append(optax.clip_by_global_norm(float(opt.clip_norm)))
  if opt.weight_decay and opt.weight_decay_mode == "coupled":
    parts.append(optax.add_decayed_weights(float(opt.weight_decay)))
  if opt.name == "sgd":
    parts.append(optax.sgd(lr, momentum=momentum, nesterov=bool(opt.nesterov)))
  elif opt.name == "rmsprop":
    parts.append(optax.rmsprop(lr, decay=float(opt.rmsprop_decay), eps=float(opt.rmsprop_eps),
                               initial_scale=float(opt.rmsprop_initial_scale),
                               eps_in_sqrt=True, momentum=momentum,
                               nesterov=bool(opt.nesterov)))
  else:
    raise ValueError(f"optimizer.name must be one of {list(OPTIMIZERS)}, got {opt.name!r}")
  return optax.chain(*parts)


def param_labels(params: Any) -> Any:
  """`"gate"` for gate-head parameters, `"backbone"` for everything else."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: GATE if is_gate_param(path) else BACKBONE, params)


def create_optimizer(config: Any, steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimizer of an experiment config.

  With `gate_optimizer.name == "same"` one chain updates every parameter;
  otherwise gates and backbone get their own chains via `multi_transform`.
  """
  backbone = group_optimizer(config.optimizer, steps_per_epoch, config.num_epochs)
  if config.gate_optimizer.name == "same":
    return backbone
  gates = group_optimizer(config.gate_optimizer, steps_per_epoch, config.num_epochs)
  return optax.multi_transform({BACKBONE: backbone, GATE: gates}, param_labels)


def learning_rates(config: Any, steps_per_epoch: int) -> dict[str, optax.Schedule]:
  """The schedules to log: `{"learning_rate": ..., "gate_learning_rate": ...}`."""
  out = {"learning_rate": learning_rate_schedule(config.optimizer, steps_per_epoch,
                                                 config.num_epochs)}
  if config.gate_optimizer.name != "same":
    out["gate_learning_rate"] = learning_rate_schedule(
        config.gate_optimizer, steps_per_epoch, config.num_epochs)
  return out
