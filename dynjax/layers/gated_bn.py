"""Batch norm with a per-example, per-channel gate, with a hand-written backward.

FBS computes `u = s * BN_noaffine(z) + t` with `s = m * g` and `t = m * beta`
of shape `[N, C]` (docs/methods.md#where-the-fbs-gate-sits). Differentiated automatically, XLA
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
    unbiased_var: update the running variance with the unbiased batch
      variance (times M/(M-1), M = N*H*W), as PyTorch does; normalisation
      always uses the biased one.

  Call: `z [N, H, W, C]`, `scale [N, C]`, `shift [N, C]`,
  `use_running_average: bool`.
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: jnp.dtype | None = None
  unbiased_var: bool = False

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
      update_running_stats(ra_mean, ra_var, mean, var, self.momentum,
                           z.shape[0] * z.shape[1] * z.shape[2], self.unbiased_var)
    return _gated_bn_train(z, mean, jax.lax.rsqrt(var + self.epsilon), scale, shift)


def update_running_stats(ra_mean, ra_var, mean: jax.Array, var: jax.Array, momentum: float,
                         count: int, unbiased_var: bool) -> None:
  """`ra <- momentum * ra + (1 - momentum) * batch`, with the biased batch
  variance (Flax) or the unbiased one, `var * count / (count - 1)` (PyTorch)."""
  if unbiased_var and count > 1:
    var = var * (count / (count - 1))
  ra_mean.value = momentum * ra_mean.value + (1.0 - momentum) * mean
  ra_var.value = momentum * ra_var.value + (1.0 - momentum) * var


class TorchBatchNorm(nn.Module):
  """Affine batch norm over `[N, H, W, C]` whose running variance follows PyTorch.

  The same variables and training-mode output as `flax.linen.BatchNorm`
  (params `scale`, `bias`; batch_stats `mean`, `var`; normalisation by the
  biased batch variance E[z^2] - E[z]^2 in float32), but the running
  variance is updated with the unbiased batch variance, as
  `torch.nn.BatchNorm2d` does. Flax's biased update makes the running
  variances of small late feature maps drift from PyTorch's by up to about
  1% per step at small batches.

  Attributes:
    momentum: running-average momentum (Flax convention, 1 - PyTorch's).
    epsilon: added to the variance.
    dtype: output dtype (None: z's).
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, z: jax.Array, use_running_average: bool) -> jax.Array:
    channels = z.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            (channels,))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32),
                           (channels,))
    dtype = z.dtype if self.dtype is None else self.dtype
    zf = z.astype(jnp.float32)
    axes = tuple(range(z.ndim - 1))
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      mean = jnp.mean(zf, axis=axes)
      var = jnp.maximum(0.0, jnp.mean(jnp.square(zf), axis=axes) - jnp.square(mean))
      if not self.is_initializing():
        count = 1
        for axis in axes:
          count *= z.shape[axis]
        update_running_stats(ra_mean, ra_var, jax.lax.stop_gradient(mean),
                             jax.lax.stop_gradient(var), self.momentum, count, True)
    y = (zf - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
    return y.astype(dtype)
