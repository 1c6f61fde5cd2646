"""DynamicConv: conv (plain or CondConv) -> batch norm -> gating policy -> act.

The one building block every dynjax model is written in. What the block does
with its output channels is decided by its `Policy` (see `policy.py`):

- `dense` / `static`: conv -> BN -> act (static layers are simply built with
  `policy.width(features)` channels).
- `fbs` (docs/methods.md#fbs): saliency g = FBSSaliency(x);
  m = wta_mask(g, ceil(d*C)); y = act(m*g*BN_noaffine(z) + m*beta). Losers
  are exactly zero, winners are boosted by g, and the predictor is trained
  only through the winners' g.
- `ftwt` (docs/methods.md#ftwt): logits P = FTWTGate(x or stop_gradient(x));
  M = 1[P > 0] (no gradient unless `gate_ste`); O = act(BN(z)); the target
  mask comes from the unmasked O; output O*M.

Every gated layer sows into the `"dynamic"` collection (overwriting, one
array per name): `mask [N, C]`, and `saliency [N, C]` (FBS) or
`gate_logits [N, C]` and `target [N, C]` (FTWT).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers import masks
from dynjax.layers.condconv import CondConv
from dynjax.layers.gated_bn import GatedBatchNorm, TorchBatchNorm
from dynjax.layers.gates import FBSSaliency, FTWTGate
from dynjax.layers.policy import Policy

DYNAMIC = "dynamic"  # the collection gated layers record into


def record(module: nn.Module, name: str, value: jax.Array) -> None:
  """Sow `value` into the `"dynamic"` collection, keeping only the latest."""
  module.sow(DYNAMIC, name, value, init_fn=lambda: None,
             reduce_fn=lambda _, new: new)


class DynamicConv(nn.Module):
  """A gateable convolution block.

  Attributes:
    features: output channels C before any static pruning.
    kernel_size, strides, padding, feature_group_count, use_bias: as nn.Conv.
      Depthwise: `feature_group_count = C_in = features`.
    policy: the gating `Policy` (or anything `Policy.create` accepts).
    activation: callable, or None for identity.
    kernel_init: conv (and per-expert) kernel initialiser.
    bn_momentum, bn_epsilon: Flax BatchNorm settings (Flax momentum = 1 -
      PyTorch momentum).
    dtype: computation dtype (e.g. jnp.bfloat16); params stay float32.
    bn_unbiased_var: update BN running variances with the unbiased batch
      variance, as PyTorch does (models ported from PyTorch code set it).

  Call: `x: [N, H, W, C_in]`, `train: bool`, optional `residual` of the output
  shape, added after BN (and gating) and before the activation. With an FTWT
  policy and `mask_after_residual`, the mask and target are taken after the
  residual add and activation instead.
  """

  features: int
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: str | Sequence[tuple[int, int]] = "SAME"
  feature_group_count: int = 1
  use_bias: bool = False
  policy: Policy = Policy()
  activation: Callable[[jax.Array], jax.Array] | None = nn.relu
  kernel_init: nn.initializers.Initializer = nn.initializers.variance_scaling(
      2.0, "fan_out", "normal")
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: jnp.dtype | None = None
  bn_unbiased_var: bool = False

  def _policy(self) -> Policy:
    return Policy.create(self.policy)

  def _conv(self, x: jax.Array, policy: Policy, features: int) -> jax.Array:
    ks = (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    st = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    if policy.experts > 0:
      return CondConv(features, ks, st, self.padding, num_experts=policy.experts,
                      feature_group_count=self.feature_group_count,
                      use_bias=self.use_bias, kernel_init=self.kernel_init,
                      dtype=self.dtype, name="conv")(x)
    return nn.Conv(features, ks, st, self.padding,
                   feature_group_count=self.feature_group_count,
                   use_bias=self.use_bias, kernel_init=self.kernel_init,
                   dtype=self.dtype, name="conv")(x)

  def _bn(self, train: bool) -> nn.Module:
    if self.bn_unbiased_var:
      bn = TorchBatchNorm(self.bn_momentum, self.bn_epsilon, dtype=self.dtype, name="bn")
      return lambda z: bn(z, use_running_average=not train)
    return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                        epsilon=self.bn_epsilon, dtype=self.dtype, name="bn")

  def _act(self, y: jax.Array) -> jax.Array:
    return y if self.activation is None else self.activation(y)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               residual: jax.Array | None = None) -> jax.Array:
    policy = self._policy()
    features = policy.width(self.features)
    z = self._conv(x, policy, features)
    add = (lambda y: y) if residual is None else (lambda y: y + residual)

    if policy.method == "fbs":
      predictor_act = (nn.relu if policy.fbs_predictor_act == "relu" else
                       self.activation or (lambda g: g))
      saliency = FBSSaliency(features, activation=predictor_act, dtype=self.dtype,
                             name="predictor")(x)
      if self.feature_group_count == x.shape[-1] == features > 1:
        # Depthwise: output channel c sees only input channel c, so a channel
        # whose input is all zero for this example (switched off upstream)
        # can only emit beta. Its saliency is zeroed so live channels win;
        # otherwise, at initialisation (g nearly input-independent), the
        # winners can all be dead channels and the whole network goes silent.
        alive = masks.channel_peak(jax.lax.stop_gradient(x)) > 0
        saliency = saliency * alive.astype(saliency.dtype)
      mask = masks.fbs_mask(saliency, masks.num_winners(policy.density, features),
                            policy.fbs_ties)
      record(self, "saliency", saliency)
      record(self, "mask", mask)
      beta = self.param("beta", nn.initializers.zeros, (features,))
      # m * g * BN_noaffine(z) + m * beta, with a fused backward (gated_bn.py).
      u = GatedBatchNorm(self.bn_momentum, self.bn_epsilon, dtype=self.dtype,
                         unbiased_var=self.bn_unbiased_var, name="bn")(
          z, mask * saliency, mask * beta, use_running_average=not train)
      return self._act(add(u))

    y = self._bn(train)(z)
    if policy.method != "ftwt":
      return self._act(add(y))

    gate_in = x if policy.mode == "joint" else jax.lax.stop_gradient(x)
    logits = FTWTGate(features, pool=policy.gate_pool, softmax=policy.gate_softmax,
                      name="gate")(gate_in)
    mask = masks.binary_gate(logits, ste=policy.gate_ste)
    m = mask[:, None, None, :].astype(y.dtype)
    if residual is not None and not policy.mask_after_residual:
      # ResNet conv2, official default: GT on the signed pre-residual BN output,
      # mask before the add, activation after it (docs/methods.md#where-the-ftwt-gates-sit).
      unmasked = y
      out = self._act(add(y * m))
    else:
      unmasked = self._act(add(y))
      out = unmasked * m
    target = masks.ftwt_target_mask(unmasked, policy.mass, policy.target)
    record(self, "gate_logits", logits)
    record(self, "mask", jax.lax.stop_gradient(mask))
    record(self, "target", target)
    return out
