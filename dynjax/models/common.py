"""Small pieces shared by the model zoo: widths, initialisers, activations.

Initialisers follow the framework each network comes from:

- `he_fan_out_normal`: N(0, sqrt(2 / (kh*kw*C_out))), the ResNet / VGG conv
  init of the FTWT CIFAR code and torchvision (`kaiming_normal_(mode=
  "fan_out", nonlinearity="relu")`).
- `torch_default_kernel_init` / `torch_default_bias_init`: PyTorch's default
  Conv/Linear init, `kaiming_uniform_(a=sqrt(5))` = U(+-1/sqrt(fan_in)) for the
  weight and U(+-1/sqrt(fan_in)) for the bias.
- `tf_variance_scaling`: TensorFlow's `variance_scaling_initializer()`
  defaults (scale 1, fan_in, truncated normal), used by the official
  M-CifarNet.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.dynamic_conv import DynamicConv
from dynjax.layers.policy import Policy

he_fan_out_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
he_fan_in_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
tf_variance_scaling = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "swish": nn.swish,
}

# BatchNorm settings of PyTorch (eps 1e-5, torch momentum 0.1 = Flax 0.9).
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9
# PyTorch updates running variances with the unbiased batch variance.
TORCH_BN_UNBIASED_VAR = True


def torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default Conv/Linear bias init, U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def scale_channels(channels: int, width_multiplier: float) -> int:
  """`round(C * width_multiplier)`, at least 1."""
  if not width_multiplier > 0:
    raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}")
  return max(1, int(round(channels * width_multiplier)))


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation called `name` (`relu` or `swish`)."""
  if name not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


def residual_policy(policy: Policy) -> Policy:
  """The policy of a layer that writes the residual stream.

  Under a policy that builds narrower layers (`static` pruning) such layers
  (ResNet stem and block conv2) keep their full width so the identity
  additions stay consistent; only block-internal layers shrink. Dynamic
  (gated) policies are unchanged.
  """
  narrows = policy.width(1 << 16) != 1 << 16
  return policy.replace(method="dense") if narrows and not policy.gated else policy


def torch_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch's symmetric `padding=k // 2` (differs from SAME for stride 2)."""
  pad = kernel_size // 2
  return ((pad, pad), (pad, pad))


def torch_conv(features: int, kernel_size: int, strides: int, *, policy: Policy,
               kernel_init: nn.initializers.Initializer, dtype, name: str,
               **kwargs) -> DynamicConv:
  """A `DynamicConv` as the networks ported from PyTorch build it.

  Symmetric `k // 2` padding, ReLU and PyTorch's batch norm (eps 1e-5,
  momentum 0.1, unbiased running variance); `kwargs` (`use_bias`,
  `feature_group_count`) go to `DynamicConv` unchanged.
  """
  return DynamicConv(
      features, kernel_size, strides, torch_padding(kernel_size), policy=policy,
      activation=nn.relu, kernel_init=kernel_init, bn_momentum=TORCH_BN_MOMENTUM,
      bn_epsilon=TORCH_BN_EPSILON, bn_unbiased_var=TORCH_BN_UNBIASED_VAR, dtype=dtype,
      name=name, **kwargs)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """`[N, H, W, C] -> [N, C]` mean over space."""
  return jnp.mean(x, axis=(1, 2))
