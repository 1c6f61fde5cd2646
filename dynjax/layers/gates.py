"""The small heads that decide per-sample channel masks.

- `FBSSaliency`: FBS saliency predictor g = ReLU(Dense(mean_hw |x|)).
- `FTWTGate`: FTWT decision gate: pool -> softmax -> Dense -> logits.

Both read the *input* `x: [N, H, W, C_in]` of the gated convolution and return
`[N, C_out]`. Parameters of these modules live under the names in
`GATE_MODULE_NAMES`, which is how optimizers tell gates from the backbone.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

# Module names whose parameters are "gate" parameters (see `is_gate_param`).
GATE_MODULE_NAMES = ("gate", "predictor")


def is_gate_param(path) -> bool:
  """True when a parameter path (tuple of keys) lies under a gate head."""
  names = [getattr(k, "key", getattr(k, "name", k)) for k in path]
  return any(str(n) in GATE_MODULE_NAMES for n in names)


def spatial_mean(x: jax.Array) -> jax.Array:
  """`[N, H, W, C] -> [N, C]` mean over all spatial axes (identity for 2-D)."""
  if x.ndim == 2:
    return x
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def spatial_max(x: jax.Array) -> jax.Array:
  if x.ndim == 2:
    return x
  return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))


def torch_default_uniform(fan_in_axis: int = 0):
  """PyTorch's default Linear/Conv init: U(+-1/sqrt(fan_in)) (docs/methods.md#gate-head)."""

  def init(key, shape, dtype=jnp.float32):
    fan_in = shape[fan_in_axis] if len(shape) > 1 else shape[0]
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class FBSSaliency(nn.Module):
  """FBS saliency predictor (docs/methods.md#saliency-predictor): g = ReLU(ss(x) W + rho).

  Attributes:
    features: C_out.
    kernel_init: initialiser for W (`[C_in, C_out]`). Default: the official
      code's truncated normal with std 0.05 ([M]), so g starts near 1. The
      paper's He initialisation ([F]) makes g compound multiplicatively
      through depth, because each predictor reads the previous layer's
      boosted output: on an untrained quarter-width M-CifarNet (FBS, d = 0.5)
      the mean saliency grows from 1.1 to 2e4 by conv7 and the logits' std
      reaches 1e10, and training collapses. Pass `he_normal()` to follow [F].
    bias_init: rho is initialised to 1 ([F], [M]).
    activation: applied to `ss(x) W + rho`; ReLU (default) keeps g >= 0.
  """

  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.truncated_normal(0.05)
  bias_init: nn.initializers.Initializer = nn.initializers.ones
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = spatial_mean(jnp.abs(x))  # l1 subsampling, mean over H*W
    g = nn.Dense(self.features, kernel_init=self.kernel_init,
                 bias_init=self.bias_init, dtype=self.dtype, name="fc")(pooled)
    return self.activation(g)


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
    if self.pool == "avg":
      e = spatial_mean(x)
    elif self.pool == "max":
      e = spatial_max(x)
    else:
      raise ValueError(f"unknown gate pool {self.pool!r}; allowed: 'avg', 'max'")
    e = e.astype(jnp.float32)
    if self.softmax:
      e = jax.nn.softmax(e, axis=-1)
    init = torch_default_uniform()
    fan_in = e.shape[-1]
    bias_init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -1.0 / jnp.sqrt(fan_in), 1.0 / jnp.sqrt(fan_in))
    return nn.Dense(self.features, kernel_init=init, bias_init=bias_init,
                    dtype=jnp.float32, name="fc")(e)
