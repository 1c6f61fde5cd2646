"""VGG-16 with batch norm for CIFAR (cfg D), as in the FTWT code (docs/methods.md#models).

13 convolutions, each 3x3 (padding 1, with bias) -> BN -> ReLU, gated after
BN+ReLU and before the max-pool; five 2x2 max-pools bring 32x32 to 1x1, and
a single Linear(512 -> classes) head:

  64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M -> fc

Module names: `conv0` .. `conv12` (DynamicConv), `fc` (nn.Dense, ungated).
Initialisation as the source: convs N(0, sqrt(2 / (9 * C_out))) with zero
bias, BN scale 1 / bias 0, head N(0, 0.01) with zero bias. BN eps 1e-5 and
PyTorch momentum 0.1 (Flax 0.9).

The flatten after the last pool is a global spatial mean, identical for 32x32
inputs (1x1 map); inputs must be at least 32x32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.policy import Policy
from dynjax.models import common

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
             512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
  """CIFAR VGG with batch norm; every convolution gateable.

  Attributes:
    num_classes: logits size.
    dynamic: gating policy for all convolutions.
    width_multiplier: scales every conv width (at least 1 channel).
    cfg: conv widths with "M" for a 2x2 max-pool (default VGG-16, cfg D).
    dtype: computation dtype; parameters stay float32.

  Call: `x: [N, H, W, C_in]` (H, W >= 32), `train: bool` ->
  logits `[N, num_classes]` (float32).
  """

  num_classes: int = 10
  dynamic: Any = None
  width_multiplier: float = 1.0
  cfg: tuple = VGG16_CFG
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    policy = Policy.create(self.dynamic)
    index = 0
    for item in self.cfg:
      if item == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      x = common.torch_conv(common.scale_channels(item, self.width_multiplier), 3, 1,
                            policy=policy, kernel_init=common.he_fan_out_normal,
                            dtype=self.dtype, name=f"conv{index}", use_bias=True)(
                                x, train=train)
      index += 1
    x = common.global_avg_pool(x)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01),
                 dtype=self.dtype, name="fc")(x)
    return x.astype(jnp.float32)
