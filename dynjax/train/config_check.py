"""Up-front validation of an experiment config: one-line errors, no tracebacks
from deep inside JAX.

`validate(config)` compares the config against the schema of
`configs/default.py` (unknown keys anywhere are an error), then checks names
and ranges. `ConfigError` is a `ValueError`; `dynjax.main` prints its message.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from dynjax.data.sources import DATASETS
from dynjax.layers.gating import get_gate, list_gates, loss_defaults
from dynjax.layers.policy import Policy
from dynjax.models import list_models
from dynjax.train import defaults
from dynjax.train.optim import OPTIMIZERS, SCHEDULE_UNITS, SCHEDULES, WEIGHT_DECAY_MODES

GATE_OPTIMIZERS = ("same",) + OPTIMIZERS
DTYPES = defaults.DTYPES

# The schema is the default config's: its keys are the allowed keys.
_DEFAULT = defaults.get_config()
TOP_LEVEL_KEYS = tuple(_DEFAULT.keys())
DATASET_KEYS = tuple(_DEFAULT.dataset.keys())
OPTIMIZER_KEYS = tuple(_DEFAULT.optimizer.keys())
POLICY_KEYS = tuple(f.name for f in dataclasses.fields(Policy))


def loss_keys() -> tuple[str, ...]:
  """`label_smoothing` and every registered gate's loss weights (user gates included)."""
  return ("label_smoothing",) + tuple(loss_defaults())


class ConfigError(ValueError):
  """A bad experiment config; the message is one line naming the field."""


def _as_dict(node: Any) -> dict:
  if hasattr(node, "to_dict"):
    return dict(node.to_dict())
  if isinstance(node, Mapping):
    return dict(node)
  raise ConfigError(f"expected a ConfigDict, got {type(node).__name__}")


def _check_keys(where: str, node: Any, allowed: tuple[str, ...],
                required: bool = True) -> dict:
  fields = _as_dict(node)
  unknown = sorted(set(fields) - set(allowed))
  if unknown:
    prefix = f"{where}." if where else ""
    raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; "
                      f"allowed in {where or 'config'}: {sorted(allowed)}")
  missing = sorted(set(allowed) - set(fields)) if required else []
  if missing:
    prefix = f"{where}." if where else ""
    raise ConfigError(f"missing config key(s) {[prefix + k for k in missing]}; "
                      "start from configs/default.py::get_config()")
  return fields


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ConfigError(f"{field} must be one of {list(allowed)}, got {value!r}")


def _positive_int(field: str, value: Any, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f"{field} must be a positive integer, got {value!r}")


def _unit_interval(field: str, value: Any, name: str) -> None:
  if not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
    raise ConfigError(f"{field} ({name}) must be in (0, 1], got {value!r}")


def _check_optimizer(where: str, node: Any, gate: bool) -> None:
  opt = _check_keys(where, node, OPTIMIZER_KEYS)
  _choice(f"{where}.name", opt["name"], GATE_OPTIMIZERS if gate else OPTIMIZERS)
  if opt["name"] == "same":
    return
  _choice(f"{where}.schedule", opt["schedule"], SCHEDULES)
  _choice(f"{where}.schedule_unit", opt["schedule_unit"], SCHEDULE_UNITS)
  _choice(f"{where}.weight_decay_mode", opt["weight_decay_mode"], WEIGHT_DECAY_MODES)
  for key in ("learning_rate", "momentum", "weight_decay", "clip_norm", "warmup_epochs"):
    value = opt[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
        or not math.isfinite(value) or value < 0:
      raise ConfigError(f"{where}.{key} must be a finite number >= 0, got {value!r}")
  if opt["schedule"] == "step" and not opt["milestones"]:
    raise ConfigError(f"{where}.milestones must list epochs for schedule='step'")
  milestones = opt["milestones"] or ()
  if isinstance(milestones, str) or not all(
      isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m > 0
      for m in milestones):
    raise ConfigError(f"{where}.milestones must be positive numbers (epochs or steps), "
                      f"got {milestones!r}")
  if gate and opt["weight_decay_mode"] == "l2_loss" and opt["weight_decay"] > 0:
    raise ConfigError(f"{where}.weight_decay_mode must be 'coupled' for the gate "
                      "optimizer (the L2 loss term never covers gate parameters)")


def validate(config: Any, device_count: int | None = None,
             process_count: int = 1) -> None:
  """Checks a config; raises `ConfigError` with a one-line message.

  Args:
    config: the experiment `ConfigDict`.
    device_count: global device count; when given, the global batch sizes must
      divide evenly over the devices.
    process_count: number of JAX processes (batches split over them).
  """
  top = _check_keys("", config, TOP_LEVEL_KEYS)
  _choice("model", top["model"], tuple(list_models()))
  if not isinstance(top["model_kwargs"], Mapping) and not hasattr(top["model_kwargs"], "to_dict"):
    raise ConfigError("model_kwargs must be a dict of keyword arguments for "
                      "dynjax.models.create")
  _positive_int("num_classes", top["num_classes"])

  policy = _check_keys("dynamic", config.dynamic, POLICY_KEYS, required=False)
  _choice("dynamic.method", policy.get("method", "dense"), tuple(list_gates()))
  _unit_interval("dynamic.density", policy.get("density", 1.0), "d")
  _unit_interval("dynamic.mass", policy.get("mass", 1.0), "r")
  try:
    Policy.create(policy)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e).splitlines()[0]) from None

  data = _check_keys("dataset", config.dataset, DATASET_KEYS)
  _choice("dataset.name", data["name"], DATASETS)
  if data["name"] == "npz" and not data["path"]:
    raise ConfigError("dataset.path must name an .npz file with x_train, y_train, "
                      "x_test, y_test when dataset.name='npz'")
  if not isinstance(data["cutout"], int) or data["cutout"] < 0:
    raise ConfigError(f"dataset.cutout must be an integer >= 0, got {data['cutout']!r}")

  for key in ("batch_size", "eval_batch_size", "num_epochs", "checkpoint_every_steps",
              "keep_checkpoints", "log_every_steps", "eval_every_epochs"):
    _positive_int(key, top[key])
  _positive_int("max_train_steps", top["max_train_steps"], allow_none=True)
  _choice("dtype", top["dtype"], DTYPES)
  if not isinstance(top["seed"], int):
    raise ConfigError(f"seed must be an integer, got {top['seed']!r}")

  _check_optimizer("optimizer", config.optimizer, gate=False)
  _check_optimizer("gate_optimizer", config.gate_optimizer, gate=True)
  loss = _check_keys("loss", config.loss, loss_keys(), required=False)
  smoothing = loss.get("label_smoothing", 0.0)
  if not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
    raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {smoothing!r}")
  gate = get_gate(policy.get("method", "dense"))
  missing = sorted(set(gate.loss_keys).union({"label_smoothing"}) - set(loss))
  if missing:
    raise ConfigError(f"missing config key(s) {['loss.' + k for k in missing]} that gate "
                      f"{gate.name!r} reads; start from configs/default.py::get_config()")
  try:
    gate.check_weights({k: loss[k] for k in gate.loss_keys})
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e).splitlines()[0]) from None

  for key in ("batch_size", "eval_batch_size"):
    if top[key] % process_count:
      raise ConfigError(f"{key} ({top[key]}) must be divisible by the number of "
                        f"processes ({process_count})")
    if device_count and top[key] % device_count:
      raise ConfigError(f"{key} ({top[key]}) must be divisible by the number of "
                        f"devices ({device_count}); the global batch is split evenly")
