"""FTWT, Fire Together Wire Together (docs/methods.md#ftwt), as a gate.

Per layer: logits P = FTWTGate(x), computed from `stop_gradient(x)` in the
`decoupled` mode and from x in `joint`; mask M = 1[P > 0] (no gradient to the
gate unless `gate_ste`); O = act(BN(z)); output O * M. The self-supervised
target keeps the channels that carry a fraction r (`dynamic.mass`) of O's
heat-map mass (`masks.ftwt_target_mask`), and the gate learns it through a
binary cross-entropy that is switched off after a cooldown epoch.

Records `gate_logits`, `mask` and `target`, each `[N, C]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn
import optax

from dynjax.layers import masks
from dynjax.layers.gating import Gate, LinearParams, Mask, Pool, register_gate

FTWT_MODES = ("decoupled", "joint")
FTWT_TARGETS = ("mass", "uniform")
GATE_POOLS = ("avg", "max")


def torch_default_uniform(fan_in_axis: int = 0):
  """PyTorch's default Linear/Conv init: U(+-1/sqrt(fan_in)) (docs/methods.md#gate-head)."""

  def init(key, shape, dtype=jnp.float32):
    fan_in = shape[fan_in_axis] if len(shape) > 1 else shape[0]
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def ftwt_features(pool: Pool, pool_kind: str = "avg", softmax: bool = True):
  """What the gate head's dense layer reads: pool -> (softmax over all C_in
  channels), in float32, as `(values, idx)` of `pool` (idx None when dense)."""
  if pool_kind == "avg":
    e, idx = pool.mean()
  elif pool_kind == "max":
    e, idx = pool.max()
  else:
    raise ValueError(f"unknown gate pool {pool_kind!r}; allowed: {list(GATE_POOLS)}")
  e = e.astype(jnp.float32)
  if softmax:  # over all C_in channels, the inactive ones included
    e, idx = jax.nn.softmax(pool.full(e, idx), axis=-1), None
  return e, idx


def ftwt_logits(fc: dict, pool: Pool, pool_kind: str = "avg", softmax: bool = True) -> jax.Array:
  """`ftwt_features` -> `@ W + b`, in float32 -> `[N, C_out]`."""
  e, idx = ftwt_features(pool, pool_kind, softmax)
  return pool.linear(e, idx, fc["kernel"], fc["bias"])


class FTWTGate(nn.Module):
  """FTWT decision gate (docs/methods.md#gate-head): pool -> softmax over channels -> Dense.

  Attributes:
    features: C_out.
    pool: `"avg"` (the official code) or `"max"` (the paper's figure).
    softmax: apply a softmax over the pooled channels (official default on).
  """

  features: int
  pool: str = "avg"
  softmax: bool = True
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    bound = 1.0 / jnp.sqrt(fan_in)
    bias_init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound)
    return LinearParams(self.features, torch_default_uniform(), bias_init, name="fc")(
        fan_in, lambda fc: ftwt_logits(fc, Pool(x), self.pool, self.softmax))


def ftwt_mask_loss(layers) -> jax.Array:
  """FTWT gate loss exactly as the official code (docs/methods.md#mask-loss-and-cooldown).

  Per gated layer: BCE-with-logits(gate_logits, target), averaged over the
  batch and *summed* over channels; then averaged over the FTWT layers. 0
  when there are none.
  """
  per_layer = [
      optax.sigmoid_binary_cross_entropy(
          e["gate_logits"].astype(jnp.float32), e["target"].astype(jnp.float32)
      ).mean(axis=0).sum()
      for _, e in layers if "gate_logits" in e and "target" in e]
  if not per_layer:
    return jnp.zeros((), jnp.float32)
  return sum(per_layer) / len(per_layer)


def ftwt_mask_weight(epoch, num_epochs: int, weight: float, cooldown: float) -> jax.Array:
  """`weight` until epoch `int(cooldown * num_epochs)`, 0 from then on
  (docs/methods.md#mask-loss-and-cooldown)."""
  return jnp.where(jnp.asarray(epoch) >= int(cooldown * num_epochs), 0.0, weight)


def ftwt_mask_accuracy(layers) -> jax.Array | None:
  """Mean over FTWT layers of the fraction of channels where mask == target."""
  accs = [jnp.mean((e["mask"] == e["target"]).astype(jnp.float32))
          for _, e in layers if "target" in e]
  return sum(accs) / len(accs) if accs else None


class FTWT(Gate):
  """The FTWT gate; `dynamic.mass` is r (docs/methods.md#ftwt)."""

  name = "ftwt"
  scopes = ("gate",)
  records = ("gate_logits", "mask", "target")
  loss_keys = {
      "ftwt_mask_weight": 1.0,  # weight of the BCE mask loss ...
      "ftwt_cooldown": 0.5,     # ... until epoch int(cooldown * num_epochs), then 0
  }

  def check(self, policy) -> None:
    for field, allowed in (("mode", FTWT_MODES), ("target", FTWT_TARGETS),
                           ("gate_pool", GATE_POOLS)):
      if getattr(policy, field) not in allowed:
        raise ValueError(f"dynamic.{field} must be one of {list(allowed)}, "
                         f"got {getattr(policy, field)!r}")

  def check_weights(self, weights) -> None:
    super().check_weights(weights)
    if not weights["ftwt_cooldown"] <= 1.0:
      raise ValueError(f"loss.ftwt_cooldown must be in [0, 1], got {weights['ftwt_cooldown']!r}")

  def __call__(self, layer, policy, x, z, *, train, residual):
    y = layer.batch_norm(z, train)
    gate_in = x if policy.mode == "joint" else jax.lax.stop_gradient(x)
    logits = FTWTGate(z.shape[-1], pool=policy.gate_pool, softmax=policy.gate_softmax,
                      name="gate")(gate_in)
    mask = masks.binary_gate(logits, ste=policy.gate_ste)
    m = mask[:, None, None, :].astype(y.dtype)
    if residual is not None and not policy.mask_after_residual:
      # ResNet conv2, official default: GT on the signed pre-residual BN output,
      # mask before the add, activation after it (docs/methods.md#where-the-ftwt-gates-sit).
      unmasked = y
      out = layer.act(y * m + residual)
    else:
      unmasked = layer.act(y if residual is None else y + residual)
      out = unmasked * m
    target = masks.ftwt_target_mask(unmasked, policy.mass, policy.target)
    layer.record("gate_logits", logits)
    layer.record("mask", jax.lax.stop_gradient(mask))
    layer.record("target", target)
    return out

  def loss(self, layers, weights, epoch, num_epochs, policy):
    weight = ftwt_mask_weight(epoch, num_epochs, weights["ftwt_mask_weight"],
                              weights["ftwt_cooldown"])
    mask_loss = ftwt_mask_loss(layers)
    metrics = {"ftwt_mask_loss": mask_loss, "ftwt_mask_weight": weight}
    accuracy = ftwt_mask_accuracy(layers)
    if accuracy is not None:
      metrics["ftwt_mask_accuracy"] = accuracy
    return weight * mask_loss, metrics

  def eval_sums(self, layers, example_weights):
    ftwt = [e for _, e in layers if "target" in e]
    if not ftwt:
      return {}
    per_example = sum(jnp.mean((e["mask"] == e["target"]).astype(jnp.float32), -1)
                      for e in ftwt)
    return {"ftwt_mask_accuracy": jnp.sum(per_example / len(ftwt) * example_weights)}

  def sparse_decision(self, module, policy, params, pool, act, dtype):
    if module.feature_group_count != 1:
      return None
    logits = ftwt_logits(params["gate"]["fc"], pool, policy.gate_pool, policy.gate_softmax)
    return Mask(mask=(logits > 0).astype(dtype), after_residual=policy.mask_after_residual)


register_gate(FTWT())
