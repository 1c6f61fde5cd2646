"""ImageNet ResNet-18 / ResNet-34 in torchvision's layout (docs/methods.md#imagenet-recipes).

7x7/2 stem conv (64) -> BN -> ReLU -> 3x3/2 max-pool -> 4 stages of basic
blocks (64, 128, 256, 512; [2, 2, 2, 2] or [3, 4, 6, 3]) -> global average
pool -> Linear(512 -> classes). Padding is PyTorch's (symmetric k // 2), so
converted torchvision weights give the same logits (`torch_convert.py`).

Module names mirror torchvision's so the converter can map them:

  torchvision                      dynjax
  conv1, bn1                       stem/conv, stem/bn          (gated)
  layer{s}.{b}.conv1, .bn1         layer{s}_{b}/conv1/conv, /bn (gated)
  layer{s}.{b}.conv2, .bn2         layer{s}_{b}/conv2/conv, /bn (gated)
  layer{s}.{b}.downsample.0, .1    layer{s}_{b}/downsample_conv, _bn (plain)
  fc                               fc

Gates: the stem and both convs of every block (17 for ResNet-18, 33 for
ResNet-34). The 1x1 projection shortcuts are plain `nn.Conv` + `TorchBatchNorm`
and record no masks. conv2 gets the shortcut as `residual=` (FTWT mask before
the add by default). Under `static` only conv1 shrinks.

Initialisation as torchvision: convs kaiming_normal (fan_out, ReLU gain), BN
scale 1 / bias 0, fc PyTorch default Linear init. BN eps 1e-5, Flax momentum
0.9 (PyTorch 0.1).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.dynamic_conv import DynamicConv
from dynjax.layers.gated_bn import TorchBatchNorm
from dynjax.layers.policy import Policy
from dynjax.models import common

RESNET_STAGE_SIZES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class BasicBlock(nn.Module):
  """torchvision BasicBlock: conv1 -> conv2 (+ shortcut) -> ReLU."""

  features: int
  strides: int = 1
  policy: Policy = Policy()
  dtype: Any = jnp.float32

  def _conv(self, policy: Policy, strides: int, name: str) -> DynamicConv:
    return common.torch_conv(self.features, 3, strides, policy=policy,
                             kernel_init=common.he_fan_out_normal, dtype=self.dtype,
                             name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = nn.Conv(self.features, (1, 1), self.strides, "VALID", use_bias=False,
                         kernel_init=common.he_fan_out_normal, dtype=self.dtype,
                         name="downsample_conv")(x)
      shortcut = TorchBatchNorm(common.TORCH_BN_MOMENTUM, common.TORCH_BN_EPSILON,
                                dtype=self.dtype, name="downsample_bn")(
                                    shortcut, use_running_average=not train)
    y = self._conv(self.policy, self.strides, "conv1")(x, train=train)
    return self._conv(common.residual_policy(self.policy), 1, "conv2")(
        y, train=train, residual=shortcut)


class ResNet(nn.Module):
  """ImageNet ResNet with basic blocks; stem and block convs gated.

  Attributes:
    num_classes: logits size (1000 for ImageNet; `create` defaults to 10).
    dynamic: gating policy for all gated convolutions.
    stage_sizes: blocks per stage, (2, 2, 2, 2) = ResNet-18,
      (3, 4, 6, 3) = ResNet-34.
    width_multiplier: scales 64/128/256/512 (at least 1 channel).
    dtype: computation dtype; parameters stay float32.

  Call: `x: [N, H, W, 3]`, `train: bool` -> logits `[N, num_classes]`.
  """

  num_classes: int = 1000
  dynamic: Any = None
  stage_sizes: tuple = RESNET_STAGE_SIZES["resnet18"]
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    policy = Policy.create(self.dynamic)
    widths = [common.scale_channels(c, self.width_multiplier) for c in (64, 128, 256, 512)]
    x = common.torch_conv(widths[0], 7, 2, policy=common.residual_policy(policy),
                          kernel_init=common.he_fan_out_normal, dtype=self.dtype,
                          name="stem")(x, train=train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (width, blocks) in enumerate(zip(widths, self.stage_sizes)):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(width, strides, policy, dtype=self.dtype,
                       name=f"layer{stage + 1}_{block}")(x, train=train)
    x = common.global_avg_pool(x)
    x = nn.Dense(self.num_classes, kernel_init=common.torch_default_kernel_init,
                 bias_init=common.torch_default_bias_init(x.shape[-1]),
                 dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)
