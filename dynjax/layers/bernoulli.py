"""A regularised Bernoulli channel gate (docs/methods.md#bernoulli-gate): the
family FTWT argues against, as a plug-in.

Per layer: logits `l = mean_hw(x) W + b` from a small head on the pooled
layer input (parameters under `bernoulli`); each channel is on with
probability `p = sigmoid(l)`. In training the mask is a hard sample of a
Gumbel-sigmoid (binary Concrete) relaxation,

  s = sigmoid((l + log u - log(1 - u)) / tau),  u ~ U(0, 1),  m = 1[s > 1/2],

whose backward pass is that of `s` (straight-through), so the head learns
through the task loss only via the relaxation. At evaluation the mask is
deterministic, `m = 1[l > 0]`. The output is `act(BN(z)) * m` (with a
residual: `act(BN(z) * m + residual)`), as FTWT's.

A rate loss drives the mean gate probability over the gated layers,
channels and examples to the target density `d` (`dynamic.density`):
`bernoulli_rate_weight * (mean p - d)^2`. Unlike FTWT's gates, nothing but
the task loss and this penalty trains the head, so the density reached
depends on how the two are balanced.

Noise comes from the `"dropout"` rng stream; without one (e.g. a train-mode
apply that passes no rngs) the training mask is the deterministic one with
the same straight-through gradient. Records `gate_prob` and `mask`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers import masks
from dynjax.layers.gating import Gate, LinearParams, Mask, Pool, register_gate


def bernoulli_logits(fc: dict, pool: Pool) -> jax.Array:
  """`mean_hw(x) @ W + b` in float32 -> `[N, C_out]`."""
  e, idx = pool.mean()
  return pool.linear(e.astype(jnp.float32), idx, fc["kernel"], fc["bias"])


class BernoulliHead(nn.Module):
  """The gate head: pooled input -> Dense -> logits `[N, C_out]`.

  Attributes:
    features: C_out.
    init_bias: initial logit of every channel (3.0: p = 0.95, gates start open).
  """

  features: int
  init_bias: float = 3.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return LinearParams(self.features, nn.initializers.normal(0.01),
                        nn.initializers.constant(self.init_bias), name="fc")(
        x.shape[-1], lambda fc: bernoulli_logits(fc, Pool(x)))


def relaxed_mask(logits: jax.Array, temperature: float,
                 key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """The training mask: `(m, s)`, hard sample forward, Gumbel-sigmoid backward.

  With `key=None` no noise is drawn (`u = 1/2`).
  """
  noisy = logits
  if key is not None:
    u = jax.random.uniform(key, logits.shape, jnp.float32, 1e-6, 1.0 - 1e-6)
    noisy = logits + (jnp.log(u) - jnp.log1p(-u))
  soft = jax.nn.sigmoid(noisy / temperature)
  hard = (soft > 0.5).astype(soft.dtype)
  return masks.straight_through(hard, soft), soft


def rate_loss(layers, target: float, weight: float) -> tuple[jax.Array, jax.Array]:
  """`(weight * (rate - target)^2, rate)`, rate = mean gate probability over
  layers, examples and channels (every layer's mean counts equally)."""
  probs = [jnp.mean(e["gate_prob"].astype(jnp.float32)) for _, e in layers if "gate_prob" in e]
  if not probs:
    zero = jnp.zeros((), jnp.float32)
    return zero, zero
  rate = sum(probs) / len(probs)
  return weight * jnp.square(rate - target), rate


class Bernoulli(Gate):
  """The Bernoulli gate; `dynamic.density` is the target rate, options
  `temperature` (tau) and `init_bias`."""

  name = "bernoulli"
  scopes = ("bernoulli",)
  records = ("gate_prob", "mask")
  loss_keys = {"bernoulli_rate_weight": 5.0}  # weight of (mean p - d)^2
  option_defaults = {"temperature": 2.0 / 3.0, "init_bias": 3.0}

  def check(self, policy) -> None:
    temperature = policy.option("temperature")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
      raise ValueError(f"dynamic.options.temperature must be > 0, got {temperature!r}")

  def __call__(self, layer, policy, x, z, *, train, residual):
    y = layer.batch_norm(z, train)
    logits = BernoulliHead(z.shape[-1], init_bias=float(policy.option("init_bias")),
                           name="bernoulli")(x)
    if train:
      key = layer.make_rng("dropout") if layer.has_rng("dropout") else None
      mask, _ = relaxed_mask(logits, float(policy.option("temperature")), key)
    else:
      mask = (logits > 0).astype(jnp.float32)
    m = mask[:, None, None, :].astype(y.dtype)
    out = layer.act(y) * m if residual is None else layer.act(y * m + residual)
    layer.record("gate_prob", jax.nn.sigmoid(logits))
    layer.record("mask", jax.lax.stop_gradient(mask))
    return out

  def loss(self, layers, weights, epoch, num_epochs, policy):
    loss, rate = rate_loss(layers, policy.density, weights["bernoulli_rate_weight"])
    return loss, {"bernoulli_rate_loss": loss, "bernoulli_rate": rate}

  def sparse_decision(self, module, policy, params, pool, act, dtype):
    if module.feature_group_count != 1:
      return None
    logits = bernoulli_logits(params["bernoulli"]["fc"], pool)
    return Mask(mask=(logits > 0).astype(dtype))


register_gate(Bernoulli())
