"""Sparse inference: run a trained gated model computing only active channels.

`sparse_apply(model, variables, x)` runs the model's own eval-mode forward
(`model.apply(variables, x, train=False)`) with every gated `DynamicConv`
replaced, through `flax.linen.intercept_methods`, by a computation over its
active channels only. Any model written in `DynamicConv` blocks works
unchanged: M-CifarNet, VGG, the ResNets.

Per gated layer:

- The decision comes first: the layer's gate (`Gate.sparse_decision`)
  computes it from the pooled layer input with the same head maths as the
  layer (`gating.Pool`), reading only the active input channels when the
  input is compact. The executor never looks at the method's name, only at
  the kind of decision:
  - `Winners` (FBS): k winners per sample (a static size), each scaled by
    its g, BN without affine plus beta.
  - `Mask` (FTWT, Bernoulli): a 0/1 mask whose count varies, so the batch's
    largest count is rounded up to one of a few bucket sizes
    (`bucket_fractions` of C) and a `lax.switch` picks the branch compiled
    for that size. Padding slots hold inactive channels and are zeroed.
  - None (e.g. depthwise layers, or a gate without a sparse form): the layer
    runs as it is, masked.
- The input side uses the previous gated layer's active set when the layer
  input is that layer's output (dropout in eval mode passes it through
  unchanged); otherwise (the image, a residual sum, a pooled map) all input
  channels are used.
- Convolution of the gathered kernel slice (`active_conv`), then batch norm
  with running statistics and the gating folded into a per-channel affine on
  the survivors, then the activation. An FBS layer that prunes little (keeps
  more than `dense_above` of its output channels) runs its full convolution
  and masks it instead, which is faster there.

The result is the dense output with zeros (the model's own code continues
on it); when the next gated layer consumes it directly, the compact form is
used instead and XLA drops the unused dense copy. Everything else (other
layers, pooling, logits, residual adds) runs as in the model. Grouped and
depthwise convolutions, and training mode, fall back to the masked-dense
computation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.condconv import condconv_im2col, conv_nhwc
from dynjax.layers.dynamic_conv import DynamicConv
from dynjax.layers.gating import Mask, Pool, Winners
from dynjax.layers.policy import Policy
from dynjax.sparse.active_conv import (active_conv, active_indices, bucket_sizes,
                                       gather_channels, scatter_channels)

DEFAULT_BUCKETS = (0.25, 0.5, 0.75, 1.0)
# An FBS layer keeping more than this fraction of its output channels runs
# its full convolution and masks it instead: the channel selection costs more
# than it saves. Measured on XLA CPU for M-CifarNet (docs/performance.md):
# the sparse path wins from d <= 0.7 at batch 1 and from d <= 0.5 at batch 64,
# and with CondConv (whose sparse path also mixes the sliced experts) from
# d <= 0.5 at both.
DENSE_ABOVE = {"batch1": 0.8, "batched": 0.6, "condconv": 0.6}
# Activations whose output is never negative.
_NONNEGATIVE = (nn.relu, jax.nn.relu, nn.relu6, jax.nn.relu6)


@dataclasses.dataclass
class ActiveSet:
  """Which channels of a gated layer's output are active.

  Attributes:
    mask: `[N, C]` 0/1, or None when only `idx` is known.
    idx: `[N, k]` int32 active channels (static k), or None.
    compact: `[N, H, W, k]` the values of those channels, or None.
    nonnegative: `compact` is known to be >= 0 (a ReLU output), so
      `|compact|` is `compact`.
  """

  mask: jax.Array | None = None
  idx: jax.Array | None = None
  compact: jax.Array | None = None
  nonnegative: bool = False


class _Tracker:
  """Maps a gated layer's dense output (by identity) to its active set."""

  def __init__(self):
    self._entries: list[tuple[Any, ActiveSet]] = []

  def add(self, dense: jax.Array, active: ActiveSet) -> None:
    self._entries.append((dense, active))

  def find(self, x: Any) -> ActiveSet | None:
    for dense, active in reversed(self._entries):
      if dense is x:
        return active
    return None


def _check_dense_above(dense_above: float | None) -> None:
  if dense_above is not None and not 0.0 <= dense_above <= 1.0:
    raise ValueError(f"dense_above must be in [0, 1], got {dense_above!r}")


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def _spatial_mean(t: jax.Array, absolute: bool = False) -> jax.Array:
  """Mean over H, W of `[N, H, W, C]` (of `|t|` if `absolute`) -> `[N, C]`.

  At batch 1 as a matrix-vector product, which XLA CPU ran about twice as fast
  as the reduction over the non-minor H, W axes (30x30x32: 12 vs 25 us). For
  larger batches the reduction: in M-CifarNet at batch 64 the copies of `|t|`
  the batched matvec needed took 11.6 ms per forward, the reductions 4.2 ms.
  """
  n, h, w, c = t.shape
  v = jnp.abs(t) if absolute else t
  if n > 1:
    return jnp.mean(v, axis=(1, 2))
  return jnp.matmul(jnp.full((1, h * w), 1.0 / (h * w), t.dtype), v.reshape(n, h * w, c))[:, 0]


def _pooled(x, active: ActiveSet | None, reduce: Callable) -> tuple[jax.Array, jax.Array | None]:
  """`reduce` over H, W of the layer input: `([N, k], idx [N, k])`.

  From the compact form when the input is one (`idx` says which of the C_in
  channels the k columns are; all others are exactly zero), else `([N, C_in], None)`.
  """
  if active is not None and active.compact is not None:
    return reduce(active.compact), active.idx
  return reduce(x), None


def _full(pooled: jax.Array, idx: jax.Array | None, c_in: int) -> jax.Array:
  """`[N, C_in]` from `_pooled`'s output (zeros outside `idx`)."""
  return pooled if idx is None else scatter_channels(pooled, idx, c_in, sorted_indices=False)


def _linear(pooled: jax.Array, idx: jax.Array | None, kernel: jax.Array,
            bias: jax.Array) -> jax.Array:
  """`full(pooled) @ kernel + bias`, reading only the kernel rows at `idx`."""
  if idx is None:
    return pooled @ kernel + bias
  if idx.shape[0] == 1:
    return pooled @ kernel[idx[0]] + bias
  return jnp.einsum("nk,nkc->nc", pooled, kernel[idx]) + bias


def _input_options(x, active: ActiveSet | None, c_in: int, fractions):
  """The static input widths to choose from, a selector, and a gatherer."""
  if active is not None and active.compact is not None:
    return (active.idx.shape[-1],), 0, lambda k: (active.compact, active.idx)
  if active is None or active.mask is None:
    return (c_in,), 0, lambda k: (x, None)
  sizes = bucket_sizes(c_in, fractions)
  count = jnp.max(jnp.sum(active.mask, axis=-1))
  select = jnp.searchsorted(jnp.asarray(sizes, jnp.float32), count, side="left")

  def gather(k):
    idx = active_indices(active.mask, k)
    return gather_channels(x, idx), idx

  return sizes, select, gather


def _take(v: jax.Array, idx: jax.Array) -> jax.Array:
  """Per-channel vector `[C]` (or per-sample `[N, C]`) at `idx [N, k]` -> `[N, 1, 1, k]`."""
  taken = v[idx] if v.ndim == 1 else jnp.take_along_axis(v, idx, axis=-1)
  return taken[:, None, None, :]


class CompactPool(Pool):
  """A gate head's view of a layer input that may be compact (`gating.Pool`).

  When the input is the previous gated layer's compact output, pooling reads
  only its k active channels and `linear` only the matching kernel rows.
  """

  def __init__(self, x: jax.Array, active: ActiveSet | None):
    super().__init__(x)
    self.active = active if active is not None and active.compact is not None else None

  def mean(self, absolute: bool = False):
    # Pooled in float32, as the layer's `Pool` (a no-op in float32 models).
    if self.active is not None:
      return (_spatial_mean(self.active.compact.astype(jnp.float32),
                            absolute and not self.active.nonnegative), self.active.idx)
    return _spatial_mean(self.x.astype(jnp.float32), absolute), None

  def max(self):
    reduce = lambda t: jnp.max(t, axis=(1, 2)).astype(jnp.float32)
    return _pooled(self.x, self.active, reduce)

  def full(self, values, idx):
    return _full(values, idx, self.channels)

  def linear(self, values, idx, kernel, bias):
    return _linear(values, idx, kernel, bias)


@dataclasses.dataclass
class _Layer:
  """What the branches of one gated layer need (see `sparse_dynamic_conv`)."""

  module: DynamicConv
  params: Any
  stats: Any
  x: jax.Array
  residual: jax.Array | None
  weights: jax.Array    # conv kernel, or CondConv experts
  alpha: jax.Array | None  # CondConv routing weights
  conv_bias: jax.Array | None
  features: int
  act: Callable
  dtype: Any
  gather_input: Callable  # k_in -> (compact input, its channel indices or None)

  def conv(self, k_in: int, out_idx: jax.Array) -> jax.Array:
    xc, in_idx = self.gather_input(k_in)
    return active_conv(xc, self.weights, in_idx, out_idx, _pair(self.module.strides),
                       self.module.padding, self.alpha)

  def full_conv(self) -> jax.Array:
    strides, padding = _pair(self.module.strides), self.module.padding
    if self.alpha is None:
      return conv_nhwc(self.x, self.weights.astype(self.x.dtype), strides, padding, 1)
    return condconv_im2col(self.x, self.weights, self.alpha, strides, padding, 1)

  def scatter(self, v: jax.Array, idx: jax.Array, **kw) -> jax.Array:
    return scatter_channels(v, idx, self.features, **kw)


def _conv_weights(params, policy: Policy, x, active_in):
  """`(weights, alpha, conv_bias)`: CondConv's routing from the (compact) pooled input."""
  conv = params["conv"]
  if policy.experts == 0:
    return conv["kernel"], None, conv.get("bias")
  router = conv["router"]
  gap, gap_idx = _pooled(x, active_in, _spatial_mean)
  alpha = jax.nn.sigmoid(_linear(gap.astype(jnp.float32), gap_idx, router["kernel"],
                                 router["bias"]))
  return conv["experts"], alpha, None if "bias" not in conv else alpha @ conv["bias"]


def _winners_branch(layer: _Layer, decision: Winners, dense_above: float, k_in: int):
  """`(dense output, compact output or None)` of a `Winners` decision."""
  out_idx, dtype, act, eps = decision.idx, layer.dtype, layer.act, layer.module.bn_epsilon
  stats = layer.stats
  # g * BN_noaffine(z + b) + beta = z * (g*s) + (beta + (b - mean) * g*s),
  # s = rsqrt(var + eps): one multiply-add on the conv output. (Folding
  # g*s into the gathered kernel slice instead measured slower at batch
  # 1: the slice has more elements than the output on most layers.)
  table = jnp.stack([stats["var"], stats["mean"], layer.params[decision.shift]], axis=-1)[out_idx]
  scale = decision.g.astype(jnp.float32) * jax.lax.rsqrt(table[..., 0] + eps)
  centre = (-table[..., 1] if layer.conv_bias is None else
            _take(layer.conv_bias, out_idx)[:, 0, 0] - table[..., 1])
  beta = table[..., 2] if decision.on is None else jnp.where(decision.on, table[..., 2], 0)
  shift = (beta + centre * scale).astype(dtype)
  residual = layer.residual
  if out_idx.shape[-1] / layer.features > dense_above:
    # Full convolution, then the folded affine with zeros for the losers:
    # stays dense (gathering or scattering activations costs more here).
    spread = lambda v: layer.scatter(v.astype(dtype), out_idx,
                                     sorted_indices=False)[:, None, None, :]
    y = layer.full_conv().astype(dtype) * spread(scale) + spread(shift)
    return act(y if residual is None else y + residual), None
  z = layer.conv(k_in, out_idx)
  y = z.astype(dtype) * scale.astype(dtype)[:, None, None, :] + shift[:, None, None, :]
  if residual is not None:
    return act(layer.scatter(y, out_idx, sorted_indices=False) + residual), y
  out = act(y)
  fill = act(jnp.zeros((), dtype))
  return layer.scatter(out, out_idx, fill=fill, sorted_indices=False), out


def _mask_branch(layer: _Layer, decision: Mask, k_in: int, k_out: int):
  """`(dense output, None)` of a `Mask` decision, computing k_out output slots."""
  out_idx = active_indices(decision.mask, k_out)
  valid = jnp.take_along_axis(decision.mask, out_idx, axis=-1)[:, None, None, :]
  stats, dtype, act, eps = layer.stats, layer.dtype, layer.act, layer.module.bn_epsilon
  z = layer.conv(k_in, out_idx)
  if layer.conv_bias is not None:
    z = z + _take(layer.conv_bias, out_idx).astype(z.dtype)
  zn = (z - _take(stats["mean"], out_idx)) * jax.lax.rsqrt(_take(stats["var"], out_idx) + eps)
  zn = zn.astype(dtype)
  bn = layer.params["bn"]
  y = zn * _take(bn["scale"], out_idx).astype(dtype) + _take(bn["bias"], out_idx).astype(dtype)
  residual = layer.residual
  if residual is None:
    return layer.scatter(act(y) * valid, out_idx), None
  if decision.after_residual:
    return layer.scatter(act(y + gather_channels(residual, out_idx)) * valid, out_idx), None
  return act(layer.scatter(y * valid, out_idx) + residual), None


def sparse_dynamic_conv(module: DynamicConv, x: jax.Array, residual: jax.Array | None,
                        tracker: _Tracker, fractions: Sequence[float],
                        dense_above: float | None = None) -> jax.Array | None:
  """Eval-mode `DynamicConv` output computing only active channels.

  Args:
    module: a bound, gated `DynamicConv`.
    x: its input `[N, H, W, C_in]`.
    residual: optional residual of the output shape.
    tracker: active sets of earlier gated outputs (updated with this one).
    fractions: bucket fractions for `Mask` decisions.
    dense_above: layers with a `Winners` decision keeping more than this
      fraction of their output channels run their full convolution and mask
      it (None: `DENSE_ABOVE` by batch size and CondConv).

  Returns:
    The dense output `[N, H', W', C]`, equal to `module(x, train=False,
    residual=residual)` up to float rounding; None when the layer's gate
    gives no sparse decision for it (the caller runs the layer as it is).
  """
  policy = Policy.create(module.policy)
  params = module.variables["params"]
  act = (lambda y: y) if module.activation is None else module.activation
  dtype = x.dtype if module.dtype is None else module.dtype
  active_in = tracker.find(x)
  x = x.astype(dtype)

  # The gate decides from the pooled input (its head's maths, shared with the layer).
  decision = policy.gate.sparse_decision(module, policy, params, CompactPool(x, active_in),
                                         act, dtype)
  if decision is None:
    return None
  features = policy.width(module.features)
  in_sizes, in_select, gather_input = _input_options(x, active_in, x.shape[-1], fractions)
  layer = _Layer(module, params, module.variables["batch_stats"]["bn"], x, residual,
                 *_conv_weights(params, policy, x, active_in), features, act, dtype,
                 gather_input)

  if isinstance(decision, Winners):
    if dense_above is None:
      dense_above = DENSE_ABOVE["condconv" if policy.experts else
                                "batch1" if x.shape[0] == 1 else "batched"]
    out_sizes, out_select = (decision.idx.shape[-1],), 0
    branch = lambda k_in, k_out: _winners_branch(layer, decision, dense_above, k_in)
  elif isinstance(decision, Mask):
    out_sizes = bucket_sizes(features, fractions)
    out_select = jnp.searchsorted(jnp.asarray(out_sizes, jnp.float32),
                                  jnp.max(jnp.sum(decision.mask, -1)), side="left")
    branch = lambda k_in, k_out: _mask_branch(layer, decision, k_in, k_out)
  else:
    raise TypeError(f"gate {policy.method!r} returned {type(decision).__name__} from "
                    "sparse_decision; expected gating.Winners, gating.Mask or None")

  combos = [(i, o) for i in in_sizes for o in out_sizes]
  if len(combos) == 1:
    dense, compact = branch(*combos[0])
  else:
    select = in_select * len(out_sizes) + out_select
    dense, compact = jax.lax.switch(select, [functools.partial(branch, i, o) for i, o in combos])

  if isinstance(decision, Winners):
    if residual is None:
      with jax.ensure_compile_time_eval():
        zero_fill = float(act(jnp.zeros((), jnp.float32))) == 0.0
      if zero_fill and compact is not None:  # losers are exact zeros: the next layer may skip them
        tracker.add(dense, ActiveSet(idx=decision.idx, compact=compact,
                                     nonnegative=module.activation in _NONNEGATIVE))
  elif residual is None or decision.after_residual:
    tracker.add(dense, ActiveSet(mask=decision.mask))
  return dense


def _intercept(tracker: _Tracker, fractions, dense_above, next_fun, args, kwargs, context):
  module = context.module
  if not isinstance(module, DynamicConv) or context.method_name != "__call__":
    return next_fun(*args, **kwargs)
  bound = dict(zip(("x", "train", "residual"), args))
  bound.update(kwargs)
  policy = Policy.create(module.policy)
  if bound.get("train", False) or not policy.gated:
    return next_fun(*args, **kwargs)
  out = sparse_dynamic_conv(module, bound["x"], bound.get("residual"), tracker, fractions,
                            dense_above)
  return next_fun(*args, **kwargs) if out is None else out


def sparse_apply(model: nn.Module, variables, x: jax.Array, *,
                 bucket_fractions: Sequence[float] = DEFAULT_BUCKETS,
                 dense_above: float | None = None, **apply_kwargs):
  """Eval-mode `model.apply(variables, x, train=False)`, active channels only.

  Args:
    model: a dynjax model (any Flax module built from `DynamicConv`).
    variables: its `{"params", "batch_stats"}`.
    x: input `[N, H, W, C]`.
    bucket_fractions: FTWT active-count buckets, as fractions of each
      layer's width (C is always a bucket). Fewer buckets, fewer compiled
      branches; finer buckets, less padding work.
    dense_above: an FBS layer keeping more than this fraction of its output
      channels runs its full convolution and masks it (same result; faster
      where little is pruned). None: `DENSE_ABOVE` (by batch size and
      CondConv); 1.0: every layer sparse; 0.0: every FBS layer dense.
    **apply_kwargs: passed to `model.apply`.

  Returns:
    The model output, equal to the masked-dense eval forward within float
    tolerance. Traceable: wrap in `jax.jit` (or use `SparseExecutor`).
  """
  tracker = _Tracker()
  _check_dense_above(dense_above)
  intercept = functools.partial(_intercept, tracker, tuple(bucket_fractions), dense_above)
  with nn.intercept_methods(intercept):
    return model.apply(variables, x, train=False, **apply_kwargs)


class SparseExecutor:
  """A jitted `sparse_apply` for one model.

  Example:
    executor = SparseExecutor(model)
    logits = executor(variables, images)   # [N, num_classes]
  """

  def __init__(self, model: nn.Module, bucket_fractions: Sequence[float] = DEFAULT_BUCKETS,
               dense_above: float | None = None):
    bucket_sizes(1, bucket_fractions)  # validate early
    _check_dense_above(dense_above)
    self.model = model
    self.bucket_fractions = tuple(bucket_fractions)
    self._fn = jax.jit(functools.partial(sparse_apply, model,
                                         bucket_fractions=self.bucket_fractions,
                                         dense_above=dense_above))

  def __call__(self, variables, x: jax.Array) -> jax.Array:
    return self._fn(variables, x)
