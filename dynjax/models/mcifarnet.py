"""M-CifarNet, the FBS paper's CIFAR-10 network (docs/methods.md#m-cifarnet).

Eight 3x3 convolutions, each conv (no bias) -> BN -> activation and each a
gateable `DynamicConv` (`conv0` .. `conv7`), dropout after conv3 and conv6,
an average pool and a 1x1 logits convolution with bias (`logits`, ungated):

  conv0  3->64   VALID  32->30     conv4 128->128        15->15
  conv1 64->64          30->30     conv5 128->192  /2    15->8
  conv2 64->128  /2     30->15     conv6 192->192         8->8   + dropout
  conv3 128->128        15->15     conv7 192->192         8->8
        + dropout                  pool 8x8 -> 1x1, logits 192->classes

Deviations / choices, all documented:

- The 8x8 average pool is a global spatial mean: identical on 32x32 inputs
  (where conv7's map is 8x8) and it lets the network run on small inputs
  such as 8x8x1 digits.
- BN uses the source's TF epsilon 1e-3. The official momentum is 0.9997; the
  default here is 0.99 for from-scratch runs (docs/methods.md#batch-norm), set
  `bn_momentum` to change it.
- `activation`: `relu` (the official [M] network) or `swish` (the seed
  paper's recipe).
- `conv_init`: `lecun` = TF `variance_scaling_initializer()` defaults as in
  the official code (scale 1, fan_in, truncated normal), or `he` (He normal,
  fan_in), which the seed paper states for all parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.dynamic_conv import DynamicConv
from dynjax.layers.policy import Policy
from dynjax.models import common

# (output channels, stride, padding) of conv0 .. conv7.
MCIFARNET_LAYERS = (
    (64, 1, "VALID"), (64, 1, "SAME"), (128, 2, "SAME"), (128, 1, "SAME"),
    (128, 1, "SAME"), (192, 2, "SAME"), (192, 1, "SAME"), (192, 1, "SAME"))
DROPOUT_AFTER = (3, 6)
CONV_INITS = {"lecun": common.tf_variance_scaling, "he": common.he_fan_in_normal}


class MCifarNet(nn.Module):
  """M-CifarNet with every convolution gateable.

  Attributes:
    num_classes: logits size.
    dynamic: gating policy for all 8 convolutions (anything `Policy.create`
      accepts).
    width_multiplier: scales every conv width (at least 1 channel).
    activation: `relu` or `swish`.
    dropout_rate: drop probability after conv3 and conv6 (source: 0.5).
    bn_momentum: Flax BatchNorm momentum (0.99; the source uses 0.9997).
    bn_epsilon: BatchNorm epsilon (TF source: 1e-3).
    conv_init: `lecun` (official TF default) or `he` (seed paper).
    dtype: computation dtype; parameters stay float32.

  Call: `x: [N, H, W, C_in]` (H, W >= 3), `train: bool` ->
  logits `[N, num_classes]` (float32). `train=True` needs
  `rngs={"dropout": key}` when `dropout_rate > 0`.
  """

  num_classes: int = 10
  dynamic: Any = None
  width_multiplier: float = 1.0
  activation: str = "relu"
  dropout_rate: float = 0.5
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  conv_init: str = "lecun"
  dtype: Any = jnp.float32

  def __post_init__(self):
    common.activation_fn(self.activation)  # validates the name
    if self.conv_init not in CONV_INITS:
      raise ValueError(f"conv_init must be one of {sorted(CONV_INITS)}, got {self.conv_init!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    policy = Policy.create(self.dynamic)
    act = common.activation_fn(self.activation)
    kernel_init = CONV_INITS[self.conv_init]
    for i, (channels, stride, padding) in enumerate(MCIFARNET_LAYERS):
      x = DynamicConv(
          common.scale_channels(channels, self.width_multiplier), 3, stride, padding,
          policy=policy, activation=act, kernel_init=kernel_init,
          bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
          dtype=self.dtype, name=f"conv{i}")(x, train=train)
      if i in DROPOUT_AFTER:
        x = nn.Dropout(self.dropout_rate, deterministic=not train,
                       name=f"dropout{i}")(x)
    x = jnp.mean(x, axis=(1, 2), keepdims=True)  # pool7: 8x8 average at 32x32
    x = nn.Conv(self.num_classes, (1, 1), use_bias=True, kernel_init=kernel_init,
                dtype=self.dtype, name="logits")(x)
    return x.reshape(x.shape[0], -1).astype(jnp.float32)
