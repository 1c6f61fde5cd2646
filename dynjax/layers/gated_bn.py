"""Batch norm with a per-example, per-channel gate, with a hand-written backward.

FBS computes `u = s * BN_noaffine(z) + t` with `s = m * g` and `t = m * beta`
of shape `[N, C]` (fbs_condconv.md §1.1). Differentiated automatically, XLA
materialises several full-size intermediates per layer in the backward pass
(`du * s`, `du * s * zn`, ...) before reducing them. The backward here needs
only two per-example reductions over H, W,

  S1[n, c] = sum_hw du,    S2[n, c] = sum_hw du * zn,

which are also the gradients of the shift and the scale, and one elementwise
pass for

  dz = rstd * (du * s - sum_n(s * S1) / M - zn * sum_n(s * S2) / M),   M = N*H*W,

the usual batch-norm backward with the gate folded in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn


def _norm(z, mean, rstd):
  return (z.astype(jnp.float32) - mean) * rstd


def _gated_bn(z, mean, rstd, scale, shift):
  """`scale * (z - mean) * rstd + shift` in float32, cast back to z's dtype."""
  zn = _norm(z, mean, rstd)
  return (zn * scale[:, None, None, :] + shift[:, None, None, :]).astype(z.dtype)


@jax.custom_vjp
def _gated_bn_train(z, mean, rstd, scale, shift):
  """`_gated_bn` where mean/rstd are z's batch statistics (the backward relies on it)."""
  return _gated_bn(z, mean, rstd, scale, shift)


def _fwd(z, mean, rstd, scale, shift):
  return _gated_bn_train(z, mean, rstd, scale, shift), (z, mean, rstd, scale)


def _bwd(res, du):
  z, mean, rstd, scale = res
  du = du.astype(jnp.float32)
  zn = _norm(z, mean, rstd)
  s1 = jnp.sum(du, axis=(1, 2))
  s2 = jnp.sum(du * zn, axis=(1, 2))
  count = z.shape[0] * z.shape[1] * z.shape[2]
  a = jnp.sum(scale * s1, axis=0) / count
  b = jnp.sum(scale * s2, axis=0) / count
  dz = rstd * (du * scale[:, None, None, :] - a - zn * b)
  # mean and rstd are functions of z: their effect is already in dz.
  return (dz.astype(z.dtype), jnp.zeros_like(mean), jnp.zeros_like(rstd),
          s2.astype(scale.dtype), s1.astype(scale.dtype))


_gated_bn_train.defvjp(_fwd, _bwd)


class GatedBatchNorm(nn.Module):
  """`scale * BN_noaffine(z) + shift` with per-example `[N, C]` scale and shift.

  Keeps the same `batch_stats` (`mean`, `var`) as `flax.linen.BatchNorm`
  with `use_scale=use_bias=False`, computed and updated the same way (biased
  batch variance E[z^2] - E[z]^2 in float32, running averages with
  `momentum`), so checkpoints and tools see no difference.

  Attributes:
    momentum: running-average momentum (Flax convention).
    epsilon: added to the variance.
    dtype: output dtype (None: z's).

  Call: `z [N, H, W, C]`, `scale [N, C]`, `shift [N, C]`,
  `use_running_average: bool`.
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, z: jax.Array, scale: jax.Array, shift: jax.Array,
               use_running_average: bool) -> jax.Array:
    channels = z.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            (channels,))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32),
                           (channels,))
    dtype = z.dtype if self.dtype is None else self.dtype
    z = z.astype(dtype)
    scale = scale.astype(jnp.float32)
    shift = shift.astype(jnp.float32)
    if use_running_average:
      rstd = jax.lax.rsqrt(ra_var.value + self.epsilon)
      return _gated_bn(z, ra_mean.value, rstd, scale, shift)
    zf = jax.lax.stop_gradient(z).astype(jnp.float32)
    mean = jnp.mean(zf, axis=(0, 1, 2))
    var = jnp.maximum(0.0, jnp.mean(jnp.square(zf), axis=(0, 1, 2)) - jnp.square(mean))
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
    return _gated_bn_train(z, mean, jax.lax.rsqrt(var + self.epsilon), scale, shift)
