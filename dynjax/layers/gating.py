"""The gate interface and the registry every gating method plugs into.

A gating method is one `Gate` subclass, registered under its name with
`register_gate`. `DynamicConv`, the training step, the optimizer split, the
weight-decay masks, the FLOP counter and the sparse executor all ask the
registered gate; none of them matches method names. A gate owns:

- `__call__`: the layer's computation after its convolution (its head, its
  decision, what it records into the `"dynamic"` collection), run inside the
  layer's `nn.compact` scope, so heads it creates are children of the layer.
- `scopes`: the names of the child modules holding its parameters. Those are
  gate parameters: their own optimizer group, no TF-style L2, and their MACs
  count as gate overhead in `dynjax.flops`.
- `loss_keys`: the `config.loss` entries it reads, with defaults, and `loss`:
  its auxiliary loss (and that loss's schedule) from the layers' records.
- `sparse_decision`: how the sparse executor obtains a layer's active set at
  inference (`Winners` or `Mask`), or None to run the masked layer unchanged.

See docs/architecture.md#how-to-add-a-gate for a worked example.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
from flax import traverse_util

from dynjax.layers.masks import num_winners

# Layers record into this Flax collection (overwriting: one array per name).
DYNAMIC = "dynamic"

_REGISTRY: dict[str, "Gate"] = {}
# Child modules whose parameters are not gates' but are also MAC overhead.
ROUTER_SCOPES = ("router",)


# ---------------------------------------------------------------------------
# Pooled views of a gate's input.


def spatial_mean(x: jax.Array, dtype=None) -> jax.Array:
  """`[N, H, W, C] -> [N, C]` mean over all spatial axes (identity for 2-D),
  accumulated and returned in `dtype` (None: x's)."""
  if x.ndim == 2:
    return x if dtype is None else x.astype(dtype)
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), dtype=dtype)


def spatial_max(x: jax.Array) -> jax.Array:
  if x.ndim == 2:
    return x
  return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))


class Pool:
  """A layer input as a gate head reads it: pooled over space, then linear.

  Heads are written once against this interface. `DynamicConv` passes the
  dense input (`Pool(x)`); the sparse executor passes a view of a compact
  input (only the active channels of the previous layer), whose methods
  return `(values [N, k], idx [N, k])` with `idx` naming the k channels of
  the C_in that the columns hold (all others are zero). Here `idx` is None.
  Pooled values are float32 whatever the compute dtype: in bf16 the means of
  nearly equal channels would tie and decide winners arbitrarily.
  """

  def __init__(self, x: jax.Array):
    self.x = x
    self.channels = x.shape[-1]

  def mean(self, absolute: bool = False) -> tuple[jax.Array, jax.Array | None]:
    return spatial_mean(jnp.abs(self.x) if absolute else self.x, jnp.float32), None

  def max(self) -> tuple[jax.Array, jax.Array | None]:
    return spatial_max(self.x).astype(jnp.float32), None

  def full(self, values: jax.Array, idx: jax.Array | None) -> jax.Array:
    """`[N, C_in]` from pooled `values` (zeros outside `idx`)."""
    assert idx is None
    return values

  def linear(self, values: jax.Array, idx: jax.Array | None, kernel: jax.Array,
             bias: jax.Array) -> jax.Array:
    """`full(values) @ kernel + bias`."""
    assert idx is None
    return jnp.dot(values, kernel) + bias


class LinearParams(nn.Module):
  """A dense layer's parameters (`kernel [in, out]`, `bias [out]`), handed to
  `apply` (e.g. a head's maths through a `Pool`) instead of applied to an
  input. Created and initialised exactly as `nn.Dense` creates its own, and
  `apply` runs in this module's scope, so its ops carry this module's path."""

  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, in_features: int, apply: Callable[[dict], Any] | None = None) -> Any:
    kernel = self.param("kernel", self.kernel_init, (in_features, self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    params = {"kernel": kernel, "bias": bias}
    return params if apply is None else apply(params)


# ---------------------------------------------------------------------------
# What the sparse executor gets from a gate.


@dataclasses.dataclass
class Winners:
  """A fixed number of winners per example (FBS-style).

  The layer's output at a winner c is `act(g_c * BN_noaffine(z_c) + beta_c)`
  (+ residual before `act`), and `act(0 + residual)` elsewhere.

  Attributes:
    g: `[N, k]` the winners' scales.
    idx: `[N, k]` int32 winner channels, in any order.
    on: `[N, k]` bool, or None: winners that really pass (the others get
      scale and shift 0); None when all k do.
    shift: the name of the layer parameter holding beta.
  """

  g: jax.Array
  idx: jax.Array
  on: jax.Array | None = None
  shift: str = "beta"


@dataclasses.dataclass
class Mask:
  """A 0/1 mask of varying count per example (FTWT-style).

  The output is `act(BN(z)) * mask`; with a residual, `act(BN(z) * mask +
  residual)`, or `act(BN(z) + residual) * mask` when `after_residual`.
  """

  mask: jax.Array
  after_residual: bool = False


# ---------------------------------------------------------------------------
# The interface.


class Gate:
  """Base class of a gating method; subclass, then `register_gate(MyGate())`.

  Class attributes:
    name: the `dynamic.method` that selects it.
    gated: the layer emits a per-example channel mask (recorded as `mask`).
    scopes: names of the child modules that hold its parameters.
    records: what each gated layer records (documentation and checks).
    loss_keys: `config.loss` entries the gate reads, with their defaults.
    option_defaults: `dynamic.options` entries it accepts, with defaults.
  """

  name: ClassVar[str] = ""
  gated: ClassVar[bool] = True
  scopes: ClassVar[tuple[str, ...]] = ()
  records: ClassVar[tuple[str, ...]] = ()
  loss_keys: ClassVar[Mapping[str, Any]] = {}
  option_defaults: ClassVar[Mapping[str, Any]] = {}

  def check(self, policy) -> None:
    """Raises ValueError for a policy this gate cannot run (called by `Policy`)."""

  def check_weights(self, weights: Mapping[str, Any]) -> None:
    """Raises ValueError for bad `loss_keys` values; default: finite numbers >= 0."""
    for key, value in weights.items():
      if isinstance(value, bool) or not isinstance(value, (int, float)) \
          or not math.isfinite(value) or value < 0:
        raise ValueError(f"loss.{key} must be a finite number >= 0, got {value!r}")

  def width(self, policy, channels: int) -> int:
    """Channels the layer builds (static pruning narrows the layer)."""
    return channels

  def __call__(self, layer, policy, x: jax.Array, z: jax.Array, *, train: bool,
               residual: jax.Array | None) -> jax.Array:
    """The layer's output from its input `x` and convolution output `z`.

    Runs inside `layer`'s compact scope: `layer.batch_norm(z, train)`,
    `layer.act(y)`, `layer.record(name, value)` and `layer.param(...)` are
    available, and modules created here are the layer's children.
    """
    raise NotImplementedError

  def loss(self, layers: Sequence[tuple[str, dict]], weights: Mapping[str, Any],
           epoch: jax.Array, num_epochs: int, policy) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The auxiliary loss (already weighted and scheduled) and its metrics.

    Args:
      layers: `[(path, records), ...]` of the gated layers (see
        `gated_layers`).
      weights: the `loss_keys` values of the experiment.
      epoch: the current epoch (traced).
      num_epochs: the run's length in epochs.
      policy: the model's `Policy` (e.g. a target density).
    """
    del layers, weights, epoch, num_epochs, policy
    return jnp.zeros((), jnp.float32), {}

  def eval_sums(self, layers: Sequence[tuple[str, dict]],
                example_weights: jax.Array) -> dict[str, jax.Array]:
    """Extra evaluation metrics, summed over examples weighted by `example_weights`."""
    del layers, example_weights
    return {}

  def sparse_decision(self, module, policy, params: Mapping[str, Any], pool: Pool,
                      act: Callable, dtype) -> Winners | Mask | None:
    """The eval-mode active set of a layer for the sparse executor.

    Args:
      module: the bound `DynamicConv`.
      policy: its `Policy`.
      params: its parameters.
      pool: its input, pooled (possibly compact).
      act: its activation.
      dtype: its compute dtype.

    Returns None when the executor should run the layer as it is (masked).
    """
    del module, policy, params, pool, act, dtype
    return None


def register_gate(gate: "Gate | type[Gate]", *, replace: bool = False) -> "Gate":
  """Registers a gate (an instance or a class) under `gate.name`.

  After this, `dynamic.method = gate.name` works in every model, in
  `python -m dynjax.main` (import the module that registers the gate from the
  config file), in the FLOP counter and in the sparse executor.

  Raises:
    ValueError: the name is empty or taken (pass `replace=True` to override).
  """
  if isinstance(gate, type):
    gate = gate()
  if not isinstance(gate, Gate):
    raise TypeError(f"register_gate needs a dynjax Gate, got {type(gate).__name__}")
  if not gate.name or not isinstance(gate.name, str):
    raise ValueError(f"{type(gate).__name__}.name must be a non-empty string")
  if gate.name in _REGISTRY and not replace:
    raise ValueError(f"a gate named {gate.name!r} is already registered "
                     f"({type(_REGISTRY[gate.name]).__name__}); pass replace=True")
  for key in gate.loss_keys:
    for other in _REGISTRY.values():
      if other.name != gate.name and key in other.loss_keys:
        raise ValueError(f"loss key {key!r} of gate {gate.name!r} is already used by "
                         f"gate {other.name!r}")
  _REGISTRY[gate.name] = gate
  return gate


def unregister_gate(name: str) -> None:
  """Removes a registered gate (for tests and interactive sessions)."""
  _REGISTRY.pop(name, None)


def get_gate(name: str) -> Gate:
  """The gate registered as `name`; ValueError naming the choices otherwise."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise ValueError(f"dynamic.method must be one of {list_gates()}, got {name!r}") from None


def list_gates() -> list[str]:
  """Registered method names, in registration order."""
  return list(_REGISTRY)


def gate_scopes() -> tuple[str, ...]:
  """Every registered gate's parameter scopes."""
  return tuple(dict.fromkeys(s for g in _REGISTRY.values() for s in g.scopes))


def loss_defaults() -> dict[str, Any]:
  """`config.loss` entries of every registered gate, with defaults."""
  out: dict[str, Any] = {}
  for gate in _REGISTRY.values():
    out.update(gate.loss_keys)
  return out


def record(module, name: str, value: jax.Array) -> None:
  """Sow `value` into the `"dynamic"` collection of `module`, keeping only the latest."""
  module.sow(DYNAMIC, name, value, init_fn=lambda: None, reduce_fn=lambda _, new: new)


def gated_layers(dynamic: Mapping[str, Any] | None) -> list[tuple[str, dict[str, jax.Array]]]:
  """Groups a `"dynamic"` collection by layer.

  Args:
    dynamic: the collection returned by `apply(..., mutable=["dynamic"])`.

  Returns:
    `[(layer_path, {"mask": ..., ...}), ...]` in recording order; layer_path
    is the module path joined with "/". Only layers that recorded a `mask`.
  """
  if not dynamic:
    return []
  flat = traverse_util.flatten_dict(dict(dynamic))
  layers: dict[tuple, dict] = {}
  for path, value in flat.items():
    layers.setdefault(tuple(path[:-1]), {})[path[-1]] = value
  return [("/".join(map(str, path)), entries) for path, entries in layers.items()
          if "mask" in entries]


def path_names(path) -> list[str]:
  """The key names of a pytree path (dict keys, attribute names)."""
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def is_gate_param(path) -> bool:
  """True when a parameter path (tuple of keys) lies under a registered gate's head."""
  scopes = set(gate_scopes())
  return any(n in scopes for n in path_names(path))


def is_overhead_scope(name: str) -> bool:
  """True for a module name whose MACs are gating overhead (gate heads, CondConv routers)."""
  return name in gate_scopes() or name in ROUTER_SCOPES


# ---------------------------------------------------------------------------
# The two ungated methods.


class DenseGate(Gate):
  """`dense`: conv -> BN -> (+ residual) -> act, every channel."""

  name = "dense"
  gated = False

  def __call__(self, layer, policy, x, z, *, train, residual):
    y = layer.batch_norm(z, train)
    return layer.act(y if residual is None else y + residual)


class StaticGate(DenseGate):
  """`static`: a dense layer built with ceil(d*C) channels (static pruning)."""

  name = "static"

  def width(self, policy, channels: int) -> int:
    return num_winners(policy.density, channels)


register_gate(DenseGate())
register_gate(StaticGate())
