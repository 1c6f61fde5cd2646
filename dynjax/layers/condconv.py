"""CondConv: per-example kernels mixed from n experts (docs/methods.md#condconv).

  y_b = (sum_i alpha_{b,i} W_i) * x_b,   alpha_b = sigmoid(GAP(x_b) R + c).

Four exact ways to compute a batch (`method`):

- `"im2col"`: stack the kh*kw shifted input windows once (pure data
  movement), form the per-example kernels K = alpha @ W (n MACs per kernel
  weight per example, the CondConv MAC convention) and run ONE batched
  matmul `[N, H'W', kh*kw*C_in] x [N, kh*kw*C_in, C_out]`: the MACs of the
  plain convolution.
- `"batched"`: the same per-example kernels as ONE convolution with the batch
  folded into the channel axis (`feature_group_count = N * groups`).
- `"mixture"`: run the n expert convolutions as one convolution with n*C_out
  outputs and mix the results with alpha (exact by linearity; n times the
  convolution MACs, but only ordinary batched convolutions).
- `"depthwise"` (depthwise only): mix per-example kernels, then kh*kw shifted
  multiply-adds.

`"auto"` picks `"im2col"` for ungrouped convs, `"depthwise"` for depthwise
ones and `"mixture"` for other grouped convs: on XLA CPU `im2col` is the
fastest exact lowering for ungrouped convs and the batch-folded `batched`
convolution the slowest (measurements in docs/performance.md#condconv-lowerings).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.gating import spatial_mean


# A jit-cache-sensitive context: a function jitted and called outside the
# override must be re-traced inside it, or tools would read the cached trace of
# the default lowering (the FLOP counter would count the wrong program).
if hasattr(jax, "make_user_context"):
  _METHOD_OVERRIDE = jax.make_user_context(None)
  _override_value = lambda: _METHOD_OVERRIDE.value
  _override_block = _METHOD_OVERRIDE
else:  # older jax: jit's cache cannot see the override; trace un-jitted fns
  _METHOD_OVERRIDE = contextvars.ContextVar("condconv_method_override", default=None)
  _override_value = _METHOD_OVERRIDE.get

  @contextlib.contextmanager
  def _override_block(method):
    token = _METHOD_OVERRIDE.set(method)
    try:
      yield
    finally:
      _METHOD_OVERRIDE.reset(token)


@contextlib.contextmanager
def method_override(method: str | None):
  """Force every CondConv traced inside the block to use `method`.

  Used by tools that need a particular lowering, e.g. the FLOP counter traces
  with `"batched"` so the kernel mixing appears as one `dot_general` (n MACs
  per kernel weight) followed by a single per-example convolution. The
  override is part of `jax.jit`'s cache key, so an already-traced jitted
  function is traced again under it.
  """
  with _override_block(method):
    yield


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def stack_initializer(base: nn.initializers.Initializer):
  """Initialise each expert independently with `base` ([T] condconv init)."""

  def init(key, shape, dtype=jnp.float32):
    keys = jax.random.split(key, shape[0])
    return jax.vmap(lambda k: base(k, shape[1:], dtype))(keys)

  return init


def conv_nhwc(x, kernel, strides, padding, groups, dilation=(1, 1)):
  """NHWC x HWIO convolution."""
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=padding,
      rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


def mix_kernels(experts: jax.Array, alpha: jax.Array) -> jax.Array:
  """Per-example kernels `K_b = sum_i alpha_{b,i} W_i`, as ONE `dot_general`.

  Args:
    experts: `[n, kh, kw, C_in/groups, C_out]`.
    alpha: `[N, n]`.
  Returns:
    `[N, kh, kw, C_in/groups, C_out]`; costs n MACs per kernel weight and
    example (the CondConv MAC convention the FLOP counter relies on).
  """
  n = experts.shape[0]
  kernels = jnp.einsum("bn,np->bp", alpha.astype(experts.dtype), experts.reshape(n, -1))
  return kernels.reshape(alpha.shape[0], *experts.shape[1:])


def condconv_batched(x, experts, alpha, strides, padding, groups):
  """One grouped convolution over the batch with per-example kernels.

  Args:
    x: `[N, H, W, C_in]`.
    experts: `[n, kh, kw, C_in/groups, C_out]`.
    alpha: `[N, n]` routing weights.
  Returns:
    `[N, H', W', C_out]`.
  """
  n, kh, kw, cin_g, cout = experts.shape
  batch = x.shape[0]
  kernels = mix_kernels(experts, alpha)
  # Output channels of the folded conv are ordered (example, group, c).
  kernels = jnp.transpose(kernels, (1, 2, 3, 0, 4)).reshape(kh, kw, cin_g, batch * cout)
  h, w, cin = x.shape[1:]
  folded = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w, batch * cin)
  y = conv_nhwc(folded, kernels.astype(x.dtype), strides, padding, batch * groups)
  ho, wo = y.shape[1:3]
  return jnp.transpose(y.reshape(ho, wo, batch, cout), (2, 0, 1, 3))


def _pads(h, w, kh, kw, strides, padding):
  if isinstance(padding, str):
    return jax.lax.padtype_to_pads((h, w), (kh, kw), strides, padding)
  return padding


def live_taps(x_shape, kh, kw, strides, padding) -> list[int]:
  """Taps (row-major `i * kw + j`) whose window reads at least one real input.

  A tap that only ever lands on padding contributes exactly zero (e.g. the
  eight outer taps of a 3x3 SAME convolution on a 1x1 map), so its patches
  and kernel rows can be skipped.
  """
  h, w = x_shape[1:3]
  (top, bottom), (left, right) = _pads(h, w, kh, kw, strides, padding)
  ho = (h + top + bottom - kh) // strides[0] + 1
  wo = (w + left + right - kw) // strides[1] + 1
  rows = [i for i in range(kh)
          if any(top <= i + strides[0] * y < top + h for y in range(ho))]
  cols = [j for j in range(kw)
          if any(left <= j + strides[1] * v < left + w for v in range(wo))]
  return [i * kw + j for i in rows for j in cols]


def shifted_windows(x, kh, kw, strides, padding) -> list[jax.Array]:
  """The kh*kw strided input windows a convolution multiplies by each tap.

  Args:
    x: `[N, H, W, C]`.
    kh, kw: kernel size; strides: (sh, sw); padding: "SAME", "VALID" or pairs.
  Returns:
    List (row-major over taps (i, j)) of `[N, H', W', C]` slices of the padded
    input: window (i, j) holds `x_pad[n, i + sh*y, j + sw*x, c]`.
  """
  h, w, channels = x.shape[1:]
  pads = _pads(h, w, kh, kw, strides, padding)
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  ho = (xp.shape[1] - kh) // strides[0] + 1
  wo = (xp.shape[2] - kw) // strides[1] + 1
  return [jax.lax.slice(
      xp, (0, i, j, 0),
      (xp.shape[0], i + (ho - 1) * strides[0] + 1, j + (wo - 1) * strides[1] + 1, channels),
      (1, strides[0], strides[1], 1)) for i in range(kh) for j in range(kw)]


def condconv_depthwise(x, experts, alpha, strides, padding):
  """Depthwise CondConv (multiplier 1) as kh*kw shifted multiply-adds.

  The per-example kernels are mixed as in `condconv_batched`; the depthwise
  convolution itself is a sum of strided slices of the padded input times the
  kernel tap, which XLA runs as fused elementwise work on every backend.
  """
  n, kh, kw, _, channels = experts.shape
  kernels = mix_kernels(experts, alpha).reshape(-1, kh * kw, channels).astype(x.dtype)
  windows = shifted_windows(x, kh, kw, strides, padding)
  y = windows[0] * kernels[:, None, None, 0, :]
  for tap in range(1, kh * kw):  # static taps, not a loop over channels/samples
    y = y + windows[tap] * kernels[:, None, None, tap, :]
  return y


def condconv_mixture(x, experts, alpha, strides, padding, groups):
  """n expert convolutions as one conv with n*C_out outputs, mixed by alpha."""
  n, kh, kw, cin_g, cout = experts.shape
  cout_g = cout // groups
  # Reorder outputs to (group, expert, c) so feature groups stay contiguous.
  k = experts.reshape(n, kh, kw, cin_g, groups, cout_g)
  k = jnp.transpose(k, (1, 2, 3, 4, 0, 5)).reshape(kh, kw, cin_g, groups * n * cout_g)
  y = conv_nhwc(x, k.astype(x.dtype), strides, padding, groups)
  y = y.reshape(*y.shape[:3], groups, n, cout_g)
  y = jnp.einsum("bhwgnc,bn->bhwgc", y, alpha.astype(y.dtype))
  return y.reshape(*y.shape[:3], cout)


def condconv_im2col(x, experts, alpha, strides, padding, groups):
  """Patches once, per-example kernels, one batched matmul.

  Args:
    x: `[N, H, W, C_in]`.
    experts: `[n, kh, kw, C_in/groups, C_out]`.
    alpha: `[N, n]` routing weights.
  Returns:
    `[N, H', W', C_out]`. The per-example kernels K = alpha @ W cost n MACs per
    kernel weight; the matmul `[N, H'W', kh*kw*C_in/g] x [N, kh*kw*C_in/g,
    C_out/g]` (per group) costs exactly the MACs of the plain convolution.
    The patches are the kh*kw shifted windows stacked (pure data movement;
    `lax.conv_general_dilated_patches` lowers to a one-hot convolution whose
    backward pass alone cost ~10x the conv on XLA CPU).
  """
  n, kh, kw, cin_g, cout = experts.shape
  batch = x.shape[0]
  cout_g = cout // groups
  taps = live_taps(x.shape, kh, kw, strides, padding)  # exact: the others read padding only
  windows = shifted_windows(x, kh, kw, strides, padding)
  patches = jnp.stack([windows[t] for t in taps], axis=3)
  ho, wo = patches.shape[1:3]
  patches = patches.reshape(batch, ho * wo, len(taps), groups, cin_g)
  if len(taps) < kh * kw:
    flat = experts.reshape(n, kh * kw, cin_g, cout)
    experts = jnp.stack([flat[:, t] for t in taps], axis=1)
  kernels = mix_kernels(experts, alpha).reshape(batch, len(taps), cin_g, groups, cout_g)
  kernels = kernels.astype(x.dtype)
  if groups == 1:  # one plain batched matmul over (tap, c_in)
    y = jnp.einsum("bpk,bko->bpo", patches.reshape(batch, ho * wo, len(taps) * cin_g),
                   kernels.reshape(batch, len(taps) * cin_g, cout_g))
  else:
    y = jnp.einsum("bptgc,btcgo->bpgo", patches, kernels)
  return y.reshape(batch, ho, wo, cout)

class CondConv(nn.Module):
  """Conditionally parameterised convolution (CondConv, Yang et al. 2019).

  Attributes:
    features: C_out.
    kernel_size: int or (kh, kw).
    strides: int or pair.
    padding: "SAME", "VALID" or explicit pairs.
    num_experts: n.
    feature_group_count: conv groups (C_in for depthwise).
    use_bias: add a per-example bias mixed by the same alpha.
    kernel_init: per-expert kernel initialiser (HWIO shape).
    method: "auto", "im2col", "batched", "mixture" or "depthwise" (see the
      module docstring).

  Call: `x: [N, H, W, C_in] -> [N, H', W', C_out]`. The routing weights
  `alpha: [N, n]` are sown into the `"dynamic"` collection as `"alpha"`.
  Norm and activation are the caller's.
  """

  features: int
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: str | Sequence[tuple[int, int]] = "SAME"
  num_experts: int = 4
  feature_group_count: int = 1
  use_bias: bool = False
  kernel_init: nn.initializers.Initializer = nn.initializers.he_normal()
  method: str = "auto"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_experts < 1:
      raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
    kh, kw = _pair(self.kernel_size)
    cin = x.shape[-1]
    groups = self.feature_group_count
    if cin % groups or self.features % groups:
      raise ValueError(f"channels ({cin} -> {self.features}) not divisible "
                       f"by feature_group_count={groups}")
    experts = self.param(
        "experts", stack_initializer(self.kernel_init),
        (self.num_experts, kh, kw, cin // groups, self.features))
    alpha = jax.nn.sigmoid(
        nn.Dense(self.num_experts, kernel_init=nn.initializers.glorot_uniform(),
                 name="router")(spatial_mean(x).astype(jnp.float32)))
    self.sow("dynamic", "alpha", alpha, init_fn=lambda: None,
             reduce_fn=lambda _, new: new)
    depthwise = groups == cin == self.features and groups > 1
    method = _override_value() or self.method
    if method == "auto":
      method = "depthwise" if depthwise else "im2col" if groups == 1 else "mixture"
    strides = _pair(self.strides)
    padding = self.padding
    if method == "depthwise":
      if not depthwise:
        raise ValueError("CondConv method 'depthwise' needs groups == C_in == C_out")
      y = condconv_depthwise(x, experts, alpha, strides, padding)
    elif method == "batched":
      y = condconv_batched(x, experts, alpha, strides, padding, groups)
    elif method == "mixture":
      y = condconv_mixture(x, experts, alpha, strides, padding, groups)
    elif method == "im2col":
      y = condconv_im2col(x, experts, alpha, strides, padding, groups)
    else:
      raise ValueError(f"unknown CondConv method {method!r}; "
                       "allowed: 'auto', 'batched', 'mixture', 'im2col', 'depthwise'")
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.num_experts, self.features))
      y = y + (alpha @ bias)[:, None, None, :].astype(y.dtype)
    return y
