"""DynamicConv: conv (plain or CondConv) -> the gate of its policy.

The one building block every dynjax model is written in. The layer runs its
convolution (`policy.width(features)` output channels, CondConv when
`policy.experts > 0`) and hands the rest to the registered gate of
`policy.method` (`dynjax.layers.gating`): `dense` / `static` apply BN and
the activation; `fbs` (`fbs.py`), `ftwt` (`ftwt.py`), `bernoulli`
(`bernoulli.py`) and user gates add their heads, masks and records. The
layer never branches on the method's name.

Every gated layer sows into the `"dynamic"` collection (overwriting, one
array per name): `mask [N, C]` and what its gate records (FBS `saliency`,
FTWT `gate_logits` and `target`, ...).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.condconv import CondConv
from dynjax.layers.gated_bn import TorchBatchNorm
from dynjax.layers.gating import DYNAMIC, record
from dynjax.layers.policy import Policy

__all__ = ["DYNAMIC", "DynamicConv", "record"]


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

  def batch_norm(self, z: jax.Array, train: bool) -> jax.Array:
    """The layer's affine batch norm (submodule `bn`); for gates."""
    if self.bn_unbiased_var:
      return TorchBatchNorm(self.bn_momentum, self.bn_epsilon, dtype=self.dtype,
                            name="bn")(z, use_running_average=not train)
    return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                        epsilon=self.bn_epsilon, dtype=self.dtype, name="bn")(z)

  def act(self, y: jax.Array) -> jax.Array:
    """The layer's activation (identity when None); for gates."""
    return y if self.activation is None else self.activation(y)

  def record(self, name: str, value: jax.Array) -> None:
    """Record `value` into the `"dynamic"` collection; for gates."""
    record(self, name, value)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               residual: jax.Array | None = None) -> jax.Array:
    policy = self._policy()
    z = self._conv(x, policy, policy.width(self.features))
    return policy.gate(self, policy, x, z, train=train, residual=residual)
