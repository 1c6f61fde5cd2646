"""MobileNetV1 (Howard et al. 2017), CIFAR and ImageNet variants (docs/methods.md#models).

A 3x3 stem conv (32) followed by 13 depthwise-separable blocks, each a 3x3
depthwise conv (stride s) -> BN -> ReLU and a 1x1 pointwise conv -> BN ->
ReLU, then a global average pool and a Linear head:

  stem 32 | 64 | 128/2 128 | 256/2 256 | 512/2 512 x5 | 1024/2 1024

- `variant="cifar"` (the FTWT code's cfg 'cifar'): stride-1 stem; 32x32 ends
  at 2x2, pooled by AvgPool(2).
- `variant="imagenet"`: stride-2 stem; 224x224 ends at 7x7, AvgPool(7).

The final pool is a global spatial mean, identical at those input sizes. The
width multiplier (1.0 / 0.75 / 0.5 / 0.25 for the published ImageNet models)
scales every layer, stem included. Activations are ReLU (not ReLU6), as in the
FTWT code; padding is PyTorch's `k // 2`.

Gates (1 + 13 + 13 = 27): `stem`, `block{i}/depthwise` and
`block{i}/pointwise` for i = 1..13. Under `static` every gated layer is
built with ceil(d*C) channels, and each depthwise conv follows the pruned
width of the layer before it (its C_in = C_out = groups).

Initialisation: PyTorch defaults (the source sets none): convs and fc
U(+-1/sqrt(fan_in)), BN scale 1 / bias 0. BN eps 1e-5, Flax momentum 0.9.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.dynamic_conv import DynamicConv
from dynjax.layers.policy import Policy
from dynjax.models import common

STEM_CHANNELS = 32
# (pointwise output channels, depthwise stride) of blocks 1 .. 13.
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
                       (1024, 2), (1024, 1))
STEM_STRIDES = {"cifar": 1, "imagenet": 2}


def _conv(features: int, kernel: int, strides: int, policy: Policy, dtype: Any,
          name: str, groups: int = 1) -> DynamicConv:
  return common.torch_conv(features, kernel, strides, policy=policy,
                           kernel_init=common.torch_default_kernel_init, dtype=dtype,
                           name=name, feature_group_count=groups)


class DepthwiseSeparable(nn.Module):
  """3x3 depthwise (stride s) -> 1x1 pointwise, both gated.

  Attributes:
    in_features: full (unpruned) input width C_in; the depthwise conv is built
      with `policy.width(C_in)` channels, which equals the actual input width
      for every policy.
    features: full pointwise output width.
  """

  in_features: int
  features: int
  strides: int = 1
  policy: Policy = Policy()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    groups = x.shape[-1]
    if groups != self.policy.width(self.in_features):
      raise ValueError(f"depthwise input has {groups} channels, expected "
                       f"{self.policy.width(self.in_features)}")
    x = _conv(self.in_features, 3, self.strides, self.policy, self.dtype,
              "depthwise", groups=groups)(x, train=train)
    return _conv(self.features, 1, 1, self.policy, self.dtype, "pointwise")(x, train=train)


class MobileNetV1(nn.Module):
  """MobileNetV1 with the stem and every depthwise / pointwise conv gated.

  Attributes:
    num_classes: logits size.
    dynamic: gating policy for all 27 convolutions.
    variant: `cifar` (stride-1 stem) or `imagenet` (stride-2 stem).
    width_multiplier: the MobileNet alpha; scales every layer (at least 1).
    dtype: computation dtype; parameters stay float32.

  Call: `x: [N, H, W, C_in]`, `train: bool` -> logits `[N, num_classes]`.
  """

  num_classes: int = 10
  dynamic: Any = None
  variant: str = "cifar"
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.variant not in STEM_STRIDES:
      raise ValueError(f"variant must be one of {sorted(STEM_STRIDES)}, got {self.variant!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    policy = Policy.create(self.dynamic)
    width = lambda c: common.scale_channels(c, self.width_multiplier)
    channels = width(STEM_CHANNELS)
    x = _conv(channels, 3, STEM_STRIDES[self.variant], policy, self.dtype, "stem")(
        x, train=train)
    for i, (features, strides) in enumerate(MOBILENET_V1_BLOCKS, start=1):
      x = DepthwiseSeparable(channels, width(features), strides, policy,
                             dtype=self.dtype, name=f"block{i}")(x, train=train)
      channels = width(features)
    x = common.global_avg_pool(x)
    x = nn.Dense(self.num_classes, kernel_init=common.torch_default_kernel_init,
                 bias_init=common.torch_default_bias_init(x.shape[-1]),
                 dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)
