"""FBS, Feature Boosting and Suppression (docs/methods.md#fbs), as a gate.

Per layer: saliency g = act_p(mean_hw |x| W + rho) from the layer input
(`FBSSaliency`, parameters under `predictor`); the k = ceil(d*C) channels of
largest g win (`masks.fbs_mask`); the output is
`act(m*g*BN_noaffine(z) + m*beta)`, so losers are exactly zero (before the
activation) and winners are scaled by their saliency. The predictor learns
through the winners' g and the lasso `lambda * sum_l E_x ||g_l(x)||_1`.

Records `saliency [N, C]` and `mask [N, C]`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers import masks
from dynjax.layers.gated_bn import GatedBatchNorm
from dynjax.layers.gating import Gate, LinearParams, Pool, Winners, register_gate

FBS_PREDICTOR_ACTS = ("relu", "layer")


def fbs_saliency(fc: dict, pool: Pool, activation: Callable, dtype=None) -> jax.Array:
  """`activation(mean_hw |x| @ W + rho)` -> `[N, C_out]` (the head's maths, once)."""
  pooled, idx = pool.mean(absolute=True)
  dtype = dtype or jnp.result_type(pooled, fc["kernel"])
  return activation(pool.linear(pooled.astype(dtype), idx, fc["kernel"].astype(dtype),
                                fc["bias"].astype(dtype)))


class FBSSaliency(nn.Module):
  """FBS saliency predictor (docs/methods.md#saliency-predictor): g = ReLU(ss(x) W + rho).

  Attributes:
    features: C_out.
    kernel_init: initialiser for W (`[C_in, C_out]`). Default: the official
      code's truncated normal with std 0.05, so g starts near 1. The paper's
      He initialisation makes g compound multiplicatively through depth,
      because each predictor reads the previous layer's boosted output: on an
      untrained quarter-width M-CifarNet (FBS, d = 0.5) the mean saliency
      grows from 1.1 to 2e4 by conv7 and the logits' std reaches 1e10, and
      training collapses. Pass `he_normal()` to follow the paper.
    bias_init: rho is initialised to 1.
    activation: applied to `ss(x) W + rho`; ReLU (default) keeps g >= 0.
  """

  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.truncated_normal(0.05)
  bias_init: nn.initializers.Initializer = nn.initializers.ones
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return LinearParams(self.features, self.kernel_init, self.bias_init, name="fc")(
        x.shape[-1], lambda fc: fbs_saliency(fc, Pool(x), self.activation, self.dtype))


def fbs_lasso(layers, strength: float) -> jax.Array:
  """FBS lasso `lambda * sum_l E_x[||g_l(x)||_1]` on the pre-wta saliencies
  (docs/methods.md#lasso; g >= 0 after the predictor's ReLU)."""
  terms = [jnp.abs(e["saliency"].astype(jnp.float32)).sum(axis=-1).mean()
           for _, e in layers if "saliency" in e]
  if not terms or not strength:
    return jnp.zeros((), jnp.float32)
  return strength * sum(terms)


def predictor_activation(policy, layer_activation) -> Callable:
  if policy.fbs_predictor_act == "relu":
    return nn.relu
  return layer_activation or (lambda g: g)


class FBS(Gate):
  """The FBS gate; `dynamic.density` is d, `fbs_ties` and `fbs_predictor_act`
  select the official code's variants (docs/methods.md#fbs)."""

  name = "fbs"
  scopes = ("predictor",)
  records = ("saliency", "mask")
  loss_keys = {"fbs_lasso": 1e-8}  # lambda of the lasso on saliencies

  def check(self, policy) -> None:
    if policy.fbs_ties not in masks.FBS_TIE_RULES:
      raise ValueError(f"dynamic.fbs_ties must be one of {list(masks.FBS_TIE_RULES)}, "
                       f"got {policy.fbs_ties!r}")
    if policy.fbs_predictor_act not in FBS_PREDICTOR_ACTS:
      raise ValueError(f"dynamic.fbs_predictor_act must be one of {list(FBS_PREDICTOR_ACTS)}, "
                       f"got {policy.fbs_predictor_act!r}")

  def __call__(self, layer, policy, x, z, *, train, residual):
    features = z.shape[-1]
    # In float32 whatever the compute dtype: the saliencies rank the channels.
    saliency = FBSSaliency(features, activation=predictor_activation(policy, layer.activation),
                           dtype=jnp.float32, name="predictor")(x)
    if layer.feature_group_count == x.shape[-1] == features > 1:
      # Depthwise: output channel c sees only input channel c, so a channel
      # whose input is all zero for this example (switched off upstream)
      # can only emit beta. Its saliency is zeroed so live channels win;
      # otherwise, at initialisation (g nearly input-independent), the
      # winners can all be dead channels and the whole network goes silent.
      alive = masks.channel_peak(jax.lax.stop_gradient(x)) > 0
      saliency = saliency * alive.astype(saliency.dtype)
    mask = masks.fbs_mask(saliency, masks.num_winners(policy.density, features), policy.fbs_ties)
    layer.record("saliency", saliency)
    layer.record("mask", mask)
    beta = layer.param("beta", nn.initializers.zeros, (features,))
    # m * g * BN_noaffine(z) + m * beta, with a fused backward (gated_bn.py).
    u = GatedBatchNorm(layer.bn_momentum, layer.bn_epsilon, dtype=layer.dtype,
                       unbiased_var=layer.bn_unbiased_var, name="bn")(
        z, mask * saliency, mask * beta, use_running_average=not train)
    return layer.act(u if residual is None else u + residual)

  def loss(self, layers, weights, epoch, num_epochs, policy):
    lasso = fbs_lasso(layers, weights["fbs_lasso"])
    return lasso, {"fbs_lasso": lasso}

  def sparse_decision(self, module, policy, params, pool, act, dtype):
    if module.feature_group_count != 1:
      return None
    saliency = fbs_saliency(params["predictor"]["fc"], pool,
                            predictor_activation(policy, module.activation), jnp.float32)
    features = saliency.shape[-1]
    k = masks.num_winners(policy.density, features)
    # The winners in top_k order (not sorted by channel): their saliencies
    # come with them, and no layer needs the indices ascending.
    strict = policy.fbs_ties == "strict" and k < features
    g, idx = jax.lax.top_k(saliency, k + strict)
    on = None
    if strict:
      # Strict tie rule: only winners above the (k+1)-th saliency count; the
      # others get g = 0, hence scale = shift = 0 and output act(0).
      threshold = g[:, -1:]
      g, idx = g[:, :-1], idx[:, :-1]
      on = g > threshold
      g = jnp.where(on, g, 0)
    return Winners(g=g, idx=idx.astype(jnp.int32), on=on)


register_gate(FBS())
