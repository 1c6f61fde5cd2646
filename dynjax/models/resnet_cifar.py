"""CIFAR ResNet-56 (He et al. 2016, §4.2) as in the FTWT code (docs/methods.md#models).

Stem 3x3 conv (16) -> 3 stages x 9 basic blocks (16, 32, 64 channels; stride
2 at the first block of stages 2 and 3) -> global average pool -> Linear.
Option-A shortcut: a 2x2 average pool and zero channels appended after the
existing ones. The official code builds that shortcut from `x.data`, so no
gradient flows through it; `shortcut_stop_gradient=True` (default) keeps
that quirk, False lets the gradient through.

Gates (1 + 2*27 = 55): `stem`, and `conv1`, `conv2` of every block
(`layer{s}_{b}`, s = 1..3, b = 0..8). conv2 receives the shortcut as
`residual=`, so with FTWT its mask sits after BN and before the add and the
block ReLU (the official default; `Policy.mask_after_residual` moves it after).
With FBS the shortcut is added after gating, so block outputs are not exactly
sparse. Under `static` only conv1 shrinks; the stem and conv2 keep the full
residual width.

Initialisation as the source: convs N(0, sqrt(2 / (9 * C_out))), BN scale 1 /
bias 0, fc with PyTorch's default Linear init. BN eps 1e-5, Flax momentum 0.9.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.policy import Policy
from dynjax.models import common


def option_a_shortcut(x: jax.Array, channels: int, stride: int,
                      stop_gradient: bool = True) -> jax.Array:
  """Parameter-free shortcut: avg-pool by `stride`, then zero-pad channels.

  Args:
    x: `[N, H, W, C]` block input.
    channels: output channels C' >= C; zeros fill channels C .. C'-1.
    stride: spatial downsampling (1 = identity pooling).
    stop_gradient: block the gradient, as the official code does.
  Returns:
    `[N, H/stride, W/stride, C']`.
  """
  if stride > 1:
    x = nn.avg_pool(x, (stride, stride), strides=(stride, stride))
  if channels > x.shape[-1]:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, channels - x.shape[-1])))
  return jax.lax.stop_gradient(x) if stop_gradient else x


class CifarBasicBlock(nn.Module):
  """conv1 (3x3/stride) -> conv2 (3x3) + option-A shortcut -> ReLU."""

  features: int
  strides: int = 1
  policy: Policy = Policy()
  shortcut_stop_gradient: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = lambda policy, name: common.torch_conv(
        self.features, 3, self.strides if name == "conv1" else 1, policy=policy,
        kernel_init=common.he_fan_out_normal, dtype=self.dtype, name=name)
    if x.shape[-1] != self.features or self.strides != 1:
      shortcut = option_a_shortcut(x, self.features, self.strides,
                                   self.shortcut_stop_gradient)
    else:
      shortcut = x
    y = conv(self.policy, "conv1")(x, train=train)
    return conv(common.residual_policy(self.policy), "conv2")(
        y, train=train, residual=shortcut)


class CifarResNet(nn.Module):
  """CIFAR ResNet-(6n+2) with option-A shortcuts; stem and block convs gated.

  Attributes:
    num_classes: logits size.
    dynamic: gating policy for all gated convolutions.
    width_multiplier: scales 16/32/64 (at least 1 channel).
    blocks_per_stage: n (9 for ResNet-56).
    shortcut_stop_gradient: no gradient through the downsampling shortcut
      (the official code's behaviour).
    dtype: computation dtype; parameters stay float32.

  Call: `x: [N, H, W, C_in]`, `train: bool` -> logits `[N, num_classes]`.
  """

  num_classes: int = 10
  dynamic: Any = None
  width_multiplier: float = 1.0
  blocks_per_stage: int = 9
  shortcut_stop_gradient: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    policy = Policy.create(self.dynamic)
    widths = [common.scale_channels(c, self.width_multiplier) for c in (16, 32, 64)]
    x = common.torch_conv(widths[0], 3, 1, policy=common.residual_policy(policy),
                          kernel_init=common.he_fan_out_normal, dtype=self.dtype,
                          name="stem")(x, train=train)
    for stage, width in enumerate(widths):
      for block in range(self.blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = CifarBasicBlock(width, strides, policy, self.shortcut_stop_gradient,
                            dtype=self.dtype, name=f"layer{stage + 1}_{block}")(x, train=train)
    x = common.global_avg_pool(x)
    x = nn.Dense(self.num_classes, kernel_init=common.torch_default_kernel_init,
                 bias_init=common.torch_default_bias_init(x.shape[-1]),
                 dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)
