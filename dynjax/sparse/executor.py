"""Sparse inference: run a trained gated model computing only active channels.

`sparse_apply(model, variables, x)` runs the model's own eval-mode forward
(`model.apply(variables, x, train=False)`) with every gated `DynamicConv`
replaced, through `flax.linen.intercept_methods`, by a computation over its
active channels only. Any model written in `DynamicConv` blocks works
unchanged: M-CifarNet, VGG, the ResNets, MobileNet.

Per gated layer:

- The decision comes first: the layer's gate (`Gate.sparse_decision`)
  computes it from the pooled layer input with the same head maths as the
  layer (`gating.Pool`), reading only the active input channels when the
  input is compact. The executor never looks at the method's name, only at
  the kind of decision: `Winners` (FBS: k winners per example, scaled by
  their g) or `Mask` (FTWT, Bernoulli: a 0/1 mask whose count varies). None
  (depthwise layers, a gate without a sparse form): the layer runs as it is.
- Then one of three plans computes the layer (all exact):
  - `dense`: the full convolution, then the folded BN/gate affine and the
    masks: the masked model's own work, no gathers.
  - `union`: channels inactive for every example of the batch are zero for
    all of them, so one plain convolution over the batch's *union* of active
    input and output channels is exact: one kernel slice
    `W[:, :, in_union, out_union]` for the whole batch. Union sizes vary, so
    they are rounded up to bucket sizes (`bucket_fractions` of C; padding
    slots hold inactive channels and are zeroed), one branch per
    (input bucket, output bucket), picked at run time by `lax.switch`.
    At batch 1 this is the example's own active set. Not for CondConv,
    whose kernels differ per example.
  - `per_example` (`Winners` only: k is static): one convolution per example
    over its own winners (`lax.map`; at batch 1 a single convolution), the
    compact output feeding the next layer without a gather.
- Which plan runs is chosen by `cost.CostModel` (calibrated per machine with
  `python -m dynjax.sparse.calibrate`): a sparse plan is a candidate where it
  is predicted to cost less than `margin` (0.85) of the dense plan; at run
  time the cheapest candidate that fits the batch's active counts runs, and
  `dense` always fits. With union counts observed on sample batches
  (`SparseExecutor.fit`), only the union sizes that lower the expected cost
  over those samples are compiled in (each branch of the run-time choice
  costs time too), and `fit` times the resulting program against the same
  with fewer plan kinds and against the all-dense plan, keeping the fastest
  (a sparse one only when at least 5% faster).
  `path=` forces one plan (tests, measurements).

The result is the dense output with zeros (the model's own code continues
on it); the next gated layer gathers its input channels from it (or uses a
per-example compact form directly). Everything else (other layers, pooling,
logits, residual adds) runs as in the model. Grouped and depthwise
convolutions and training mode fall back to the masked-dense computation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from dynjax.layers.condconv import condconv_im2col, conv_nhwc
from dynjax.layers.dynamic_conv import DynamicConv
from dynjax.layers.gating import Mask, Pool, Winners
from dynjax.layers.policy import Policy
from dynjax.sparse.active_conv import (active_conv, bucket_sizes, gather_channels,
                                       scatter_channels)
from dynjax.sparse.cost import CostModel, Geometry, default_cost_model, interleaved_seconds

DEFAULT_BUCKETS = (0.25, 0.5, 0.75, 1.0)
PATHS = ("auto", "dense", "union", "per_example")
PLANS = ("dense", "union", "per_example")
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
    union: `[C]` 0/1: channels active for at least one example (all others
      are zero for the whole batch), or None.
    permuted: `[N, H, W, C]` the output with its channels in
      `permuted_order.perm` order (the union first, zeros after it), so the
      next layer slices its union input instead of gathering it; or None.
  """

  mask: jax.Array | None = None
  idx: jax.Array | None = None
  compact: jax.Array | None = None
  nonnegative: bool = False
  union: jax.Array | None = None
  permuted: jax.Array | None = None
  permuted_order: Any = None


class _Tracker:
  """Maps a gated layer's dense output (by identity) to its active set."""

  def __init__(self):
    self._entries: list[tuple[Any, ActiveSet]] = []
    self.plans: list = []

  def add(self, dense: jax.Array, active: ActiveSet) -> None:
    self._entries.append((dense, active))

  def find(self, x: Any) -> ActiveSet | None:
    for dense, active in reversed(self._entries):
      if dense is x:
        return active
    return None


def _check_path(path: str) -> None:
  if path not in PATHS:
    raise ValueError(f"path must be one of {PATHS}, got {path!r}")


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
  """What the plans of one gated layer need (see `sparse_dynamic_conv`)."""

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

  @property
  def strides(self):
    return _pair(self.module.strides)

  def full_conv(self) -> jax.Array:
    padding = self.module.padding
    if self.alpha is None:
      return conv_nhwc(self.x, self.weights.astype(self.x.dtype), self.strides, padding, 1)
    return condconv_im2col(self.x, self.weights, self.alpha, self.strides, padding, 1)

  def union_conv(self, xc: jax.Array, in_idx: jax.Array | None, out_idx: jax.Array) -> jax.Array:
    """One plain convolution with the shared kernel slice `W[:, :, in_idx, out_idx]`."""
    w = self.weights
    kernel = w[..., out_idx] if in_idx is None else w[:, :, in_idx[:, None], out_idx[None, :]]
    return conv_nhwc(xc, kernel.astype(xc.dtype), self.strides, self.module.padding, 1)

  def geometry(self, n: int) -> Geometry:
    kh, kw, c_in = self.weights.shape[-4:-1]
    out = jax.eval_shape(
        lambda a, k: conv_nhwc(a, k, self.strides, self.module.padding, 1),
        jax.ShapeDtypeStruct((1,) + self.x.shape[1:], jnp.float32),
        jax.ShapeDtypeStruct((kh, kw, c_in, self.features), jnp.float32))
    return Geometry(n=n, hw_in=self.x.shape[1] * self.x.shape[2],
                    hw_out=out.shape[1] * out.shape[2], window=kh * kw, c_in=c_in,
                    c_out=self.features)


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


@dataclasses.dataclass
class _UnionOrder:
  """The channels of a batch union first (ascending), then the others.

  `perm[:k]` covers the union for every bucket size k >= its count (a static
  slice, no search per branch); `spread` puts k computed channels back in
  the dense layout with a gather through the inverse permutation, which XLA
  CPU runs about 4x faster per element than the equivalent scatter.
  """

  perm: jax.Array
  inverse: jax.Array

  @classmethod
  def of(cls, union: jax.Array) -> "_UnionOrder":
    perm = jnp.argsort(1.0 - union, stable=True).astype(jnp.int32)
    return cls(perm, jnp.argsort(perm).astype(jnp.int32))

  def pad(self, v: jax.Array, fill: float = 0.0) -> jax.Array:
    """`[..., k]` values of channels `perm[:k]` -> `[..., C]` in `perm` order."""
    k, c = v.shape[-1], self.perm.shape[0]
    if k < c:
      v = jnp.concatenate([v, jnp.full(v.shape[:-1] + (c - k,), fill, v.dtype)], axis=-1)
    return v

  def spread(self, v: jax.Array, fill: float = 0.0) -> jax.Array:
    """`[..., k]` values of channels `perm[:k]` -> `[..., C]` (others `fill`)."""
    return jnp.take(self.pad(v, fill), self.inverse, axis=-1)


# --------------------------------------------------------------------------
# Winners (FBS): output act(z * scale + shift) with scale = shift = 0 off the
# winners. g * BN_noaffine(z + b) + beta = z * (g*s) + (beta + (b - mean) * g*s),
# s = rsqrt(var + eps): one multiply-add on the convolution output.


def _winners_affine(layer: _Layer, decision: Winners):
  """`(scale, shift)`, each `[N, k]` at the winners."""
  out_idx, eps = decision.idx, layer.module.bn_epsilon
  stats = layer.stats
  table = jnp.stack([stats["var"], stats["mean"], layer.params[decision.shift]], axis=-1)[out_idx]
  scale = decision.g.astype(jnp.float32) * jax.lax.rsqrt(table[..., 0] + eps)
  centre = (-table[..., 1] if layer.conv_bias is None else
            _take(layer.conv_bias, out_idx)[:, 0, 0] - table[..., 1])
  beta = table[..., 2] if decision.on is None else jnp.where(decision.on, table[..., 2], 0)
  return scale.astype(layer.dtype), (beta + centre * scale).astype(layer.dtype)


def _winners_finish(layer: _Layer, y: jax.Array, scatter: Callable):
  """Dense output from the affine output `y` of the computed channels."""
  act, residual = layer.act, layer.residual
  if residual is not None:
    return act(scatter(y) + residual)
  return scatter(act(y), fill=act(jnp.zeros((), layer.dtype)))


def _winners_dense(layer: _Layer, spread_scale, spread_shift):
  y = layer.full_conv().astype(layer.dtype) * spread_scale[:, None, None, :] \
      + spread_shift[:, None, None, :]
  return _winners_finish(layer, y, lambda v, fill=None: v)


def _winners_union(layer: _Layer, spread_scale, spread_shift, order: _UnionOrder, permuted: bool,
                   in_fn, k_in, k_out):
  out_idx = order.perm[:k_out]
  xc, in_idx = in_fn(k_in)
  z = layer.union_conv(xc, in_idx, out_idx).astype(layer.dtype)
  y = z * spread_scale[:, out_idx][:, None, None, :] + spread_shift[:, out_idx][:, None, None, :]
  return _winners_finish(
      layer, y, order.pad if permuted else order.spread)


def _winners_per_example(layer: _Layer, decision: Winners, scale, shift, xc, in_idx):
  """`(dense output, compact output or None)`: one convolution per example."""
  out_idx, act = decision.idx, layer.act
  z = active_conv(xc, layer.weights, in_idx, out_idx, layer.strides, layer.module.padding,
                  layer.alpha)
  y = z.astype(layer.dtype) * scale[:, None, None, :] + shift[:, None, None, :]
  if layer.residual is not None:
    scattered = scatter_channels(y, out_idx, layer.features, sorted_indices=False)
    return act(scattered + layer.residual), None
  out = act(y)
  fill = act(jnp.zeros((), layer.dtype))
  return scatter_channels(out, out_idx, layer.features, fill=fill, sorted_indices=False), out


# --------------------------------------------------------------------------
# Mask (FTWT, Bernoulli): act(BN(z)) * mask, residual variants as `Mask`.


def _mask_finish(layer: _Layer, decision: Mask, z, take: Callable, valid, scatter: Callable):
  """Dense output from the convolution output `z` of the computed channels.

  `take` picks per-channel vectors `[C]` for them, `valid` `[N, k]` is the
  mask there, `scatter` maps computed channels to the dense layout.
  """
  stats, dtype, act, eps = layer.stats, layer.dtype, layer.act, layer.module.bn_epsilon
  if layer.conv_bias is not None:
    z = z + take(layer.conv_bias).astype(z.dtype)
  zn = ((z - take(stats["mean"])) * jax.lax.rsqrt(take(stats["var"]) + eps)).astype(dtype)
  bn = layer.params["bn"]
  y = zn * take(bn["scale"]).astype(dtype) + take(bn["bias"]).astype(dtype)
  valid = valid[:, None, None, :].astype(dtype)
  residual = layer.residual
  if residual is None:
    return scatter(act(y) * valid)
  if decision.after_residual:
    return scatter(act(y + take(residual)) * valid)
  return act(scatter(y * valid) + residual)


def _mask_dense(layer: _Layer, decision: Mask):
  return _mask_finish(layer, decision, layer.full_conv(), lambda v: v, decision.mask,
                      lambda v: v)


def _mask_union(layer: _Layer, decision: Mask, order: _UnionOrder, permuted: bool, in_fn, k_in,
                k_out):
  out_idx = order.perm[:k_out]
  xc, in_idx = in_fn(k_in)
  z = layer.union_conv(xc, in_idx, out_idx)
  return _mask_finish(layer, decision, z, lambda v: v[..., out_idx], decision.mask[:, out_idx],
                      order.pad if permuted else order.spread)


@dataclasses.dataclass
class _Candidate:
  plan: str
  k_in: int
  k_out: int
  cost: float
  fn: Callable  # () -> dense output (or (dense, compact) when alone)
  union_sized: bool = False  # feasible only when the union counts fit k_in, k_out


@dataclasses.dataclass
class PlanRecord:
  """What the executor chose for one gated layer (`sparse_apply(return_plans=True)`).

  Attributes:
    name: the layer's module path.
    candidates: `(plan, k_in, k_out, predicted seconds)` of each compiled branch.
    selected: traced int32 `[]`: the index of the branch that ran.
    union_in, union_out: traced `[]` counts of the batch's active input and
      output channels (C_in / C when not known).
    c_in, c_out: the layer's widths.
  """

  name: str
  candidates: tuple[tuple[str, int, int, float], ...]
  selected: Any
  union_in: Any
  union_out: Any
  c_in: int
  c_out: int


def _union_input(x, active_in: ActiveSet | None, c_in: int, fractions):
  """`(sizes, count, fn)`: the static input widths a union plan may use,
  the batch's active input count, and `k -> (compact input, its indices or None)`."""
  if active_in is not None and active_in.compact is not None and x.shape[0] == 1:
    idx = active_in.idx[0]
    return (idx.shape[-1],), jnp.asarray(idx.shape[-1]), lambda k: (active_in.compact, idx)
  if active_in is None or active_in.union is None:
    return (c_in,), jnp.asarray(c_in), lambda k: (x, None)
  count = jnp.sum(active_in.union)
  if active_in.permuted is not None:  # union channels first: a slice, no gather
    perm = active_in.permuted_order.perm
    return (bucket_sizes(c_in, fractions), count,
            lambda k: (x, None) if k == c_in else (active_in.permuted[..., :k], perm[:k]))
  order = _UnionOrder.of(active_in.union)

  def gather(k):
    if k == c_in:
      return x, None
    idx = order.perm[:k]
    return jnp.take(x, idx, axis=-1), idx

  return bucket_sizes(c_in, fractions), count, gather


def _select(candidates: list[_Candidate], path: str, model: CostModel,
            samples: Sequence[tuple[int, int]] | None,
            allow: Sequence[str] = PLANS) -> list[_Candidate]:
  """The plans to compile for one layer.

  "auto": the cheapest plan that always fits (dense, or per-example where it
  beats dense by the cost model's margin), plus union sizes that pay. With
  observed union counts (`samples`), union sizes are added greedily while
  they lower the expected cost over the samples, the run-time choice among
  the branches included; without, every union size predicted to beat the
  fallback by the margin after that choice's cost.
  """
  dense_cost = candidates[0].cost
  if path == "dense":
    return candidates[:1]
  if path == "auto":
    candidates = [c for c in candidates if c.plan == "dense" or c.plan in allow]
  if path != "auto":
    forced = [c for c in candidates if c.plan == path]
    if not forced:  # the layer has no such plan: the other sparse one
      forced = [c for c in candidates if c.plan != "dense"]
    # Dense stays as the last resort of a union plan whose buckets may not fit.
    return forced + ([dataclasses.replace(candidates[0], cost=1e30)]
                     if all(c.union_sized for c in forced) else [])
  fits = [c for c in candidates if not c.union_sized
          and (c.plan == "dense" or c.cost < model.margin * dense_cost)]
  base = min(fits, key=lambda c: c.cost)
  unions = [c for c in candidates if c.union_sized and c.cost < model.margin * base.cost]
  if samples is None:
    overhead = model.switch_time(len(unions) + 1)
    return [c for c in unions if c.cost + overhead < model.margin * base.cost] + [base]
  samples = np.asarray(samples, np.int64).reshape(-1, 2)

  def expected(selection):
    best = np.full(len(samples), base.cost)
    for c in selection:
      fit = (samples[:, 0] <= c.k_in) & (samples[:, 1] <= c.k_out)
      best = np.where(fit, np.minimum(best, c.cost), best)
    return model.switch_time(len(selection) + 1) + float(best.mean())

  selection, current = [], base.cost
  while True:
    trials = [(expected(selection + [c]), i) for i, c in enumerate(unions) if c not in selection]
    if not trials:
      break
    value, i = min(trials)
    if value >= current or value >= model.margin * base.cost and not selection:
      break
    selection.append(unions[i])
    current = value
  return selection + [base]


def sparse_dynamic_conv(module: DynamicConv, x: jax.Array, residual: jax.Array | None,
                        tracker: _Tracker, fractions: Sequence[float], path: str = "auto",
                        cost_model: CostModel | None = None,
                        profile: Mapping[str, Any] | None = None,
                        allow: Sequence[str] = PLANS) -> jax.Array | None:
  """Eval-mode `DynamicConv` output computing only active channels.

  Args:
    module: a bound, gated `DynamicConv`.
    x: its input `[N, H, W, C_in]`.
    residual: optional residual of the output shape.
    tracker: active sets of earlier gated outputs (updated with this one).
    fractions: bucket fractions for union sizes.
    path: "auto" (the cost model chooses), or force "dense", "union" or
      "per_example" where the layer has that plan.
    cost_model: the `cost.CostModel` (None: `cost.default_cost_model()`).
    profile: `{layer name: [(union_in, union_out), ...]}` counts observed on
      sample batches of this size (`SparseExecutor.fit`), or None.
    allow: the plans "auto" may use (dense always).

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
  if not isinstance(decision, (Winners, Mask)):
    raise TypeError(f"gate {policy.method!r} returned {type(decision).__name__} from "
                    "sparse_decision; expected gating.Winners, gating.Mask or None")
  model = cost_model or default_cost_model()
  features = policy.width(module.features)
  n, c_in = x.shape[0], x.shape[-1]
  layer = _Layer(module, params, module.variables["batch_stats"]["bn"], x, residual,
                 *_conv_weights(params, policy, x, active_in), features, act, dtype)
  geometry = layer.geometry(n)
  winners = isinstance(decision, Winners)

  # The batch's union of active output channels.
  if winners:
    union_out = jnp.zeros((features,), jnp.float32).at[decision.idx.reshape(-1)].set(1.0)
  else:
    union_out = jnp.max(decision.mask, axis=0).astype(jnp.float32)

  candidates = []
  if winners:
    scale, shift = _winners_affine(layer, decision)
    spread = lambda v: scatter_channels(v, decision.idx, features, sorted_indices=False)
    spread_scale, spread_shift = spread(scale), spread(shift)
    candidates.append(_Candidate("dense", c_in, features, model.dense(geometry),
                                 lambda: _winners_dense(layer, spread_scale, spread_shift)))
    # Per example: the input's own compact form, or its winners gathered, or all of it.
    k = decision.idx.shape[-1]
    if active_in is not None and active_in.compact is not None:
      pe_x, pe_idx, gathered = active_in.compact, active_in.idx, False
    elif active_in is not None and active_in.idx is not None:
      pe_x, pe_idx, gathered = None, active_in.idx, True
    else:
      pe_x, pe_idx, gathered = x, None, False
    k_in_pe = c_in if pe_idx is None else pe_idx.shape[-1]

    def per_example():
      xc = gather_channels(x, pe_idx) if gathered else pe_x
      return _winners_per_example(layer, decision, scale, shift, xc, pe_idx)

    candidates.append(_Candidate("per_example", k_in_pe, k,
                                 model.per_example(geometry, k_in_pe, k, gathered), per_example))
  else:
    candidates.append(_Candidate("dense", c_in, features, model.dense(geometry),
                                 lambda: _mask_dense(layer, decision)))

  name = "/".join(module.scope.path)
  samples = None if profile is None else profile.get(name)
  in_sizes, count_in, in_fn = _union_input(x, active_in, c_in, fractions)
  compact_in = active_in is not None and active_in.compact is not None and n == 1
  sliced_in = compact_in or (active_in is not None and active_in.permuted is not None)
  # Outputs the next layer may skip the zeros of: union plans then hand it
  # their channels union-first (`permuted`), with no spread back to C.
  with jax.ensure_compile_time_eval():
    zero_fill = float(act(jnp.zeros((), jnp.float32))) == 0.0
  trackable = (residual is None and zero_fill if winners
               else residual is None or decision.after_residual)
  if layer.alpha is None and not (winners and n == 1):
    order = _UnionOrder.of(union_out)
    out_sizes = bucket_sizes(features, fractions)
    if samples:  # also the largest counts seen on the samples: no padding for them
      seen_in, seen_out = np.max(np.asarray(samples, np.int64).reshape(-1, 2), axis=0)
      if len(in_sizes) > 1:
        in_sizes = tuple(sorted(set(in_sizes) | {max(int(seen_in), 1)}))
      out_sizes = tuple(sorted(set(out_sizes) | {max(int(seen_out), 1)}))
    if winners:  # the union holds at least the k winners
      out_sizes = tuple(s for s in out_sizes if s >= decision.idx.shape[-1])
    for k_in in in_sizes:
      for k_out in out_sizes:
        if k_in == c_in and k_out == features:
          continue  # that is the dense plan with extra gathers
        t = model.union(geometry, k_in, k_out, gather_input=k_in < c_in and not sliced_in,
                        spread_output=not trackable)
        if winners:
          fn = functools.partial(_winners_union, layer, spread_scale, spread_shift, order,
                                 trackable, in_fn, k_in, k_out)
        else:
          fn = functools.partial(_mask_union, layer, decision, order, trackable, in_fn, k_in,
                                 k_out)
        candidates.append(_Candidate("union", k_in, k_out, t, fn, union_sized=True))

  chosen = _select(candidates, path, model, samples, allow)

  count_out = jnp.sum(union_out)
  compact = permuted = None
  permuted_mode = trackable and any(c.plan == "union" for c in chosen)
  dense_of = lambda out: out[0] if isinstance(out, tuple) else out  # drop a compact form
  if permuted_mode:  # every branch returns the union-first layout
    chosen = [c if c.plan == "union" else dataclasses.replace(
        c, fn=lambda c=c: jnp.take(dense_of(c.fn()), order.perm, axis=-1)) for c in chosen]
  if len(chosen) == 1:
    selected = jnp.asarray(0, jnp.int32)
    out = chosen[0].fn()
    dense, compact = out if isinstance(out, tuple) else (out, None)
  else:
    feasible = jnp.stack([(count_in <= c.k_in) & (count_out <= c.k_out) if c.union_sized
                          else jnp.asarray(True) for c in chosen])
    costs = jnp.asarray([c.cost for c in chosen], jnp.float32)
    selected = jnp.argmin(jnp.where(feasible, costs, jnp.inf)).astype(jnp.int32)
    dense = jax.lax.switch(selected, [lambda c=c: dense_of(c.fn()) for c in chosen])
  if permuted_mode:
    permuted, dense = dense, jnp.take(dense, order.inverse, axis=-1)
  tracker.plans.append(PlanRecord(
      name=name, selected=selected, union_in=count_in,
      union_out=count_out, c_in=c_in, c_out=features,
      candidates=tuple((c.plan, c.k_in, c.k_out, c.cost) for c in chosen)))

  if trackable:  # inactive channels are exact zeros: the next layer may skip them
    tracker.add(dense, ActiveSet(
        mask=None if winners else decision.mask, idx=decision.idx if winners else None,
        compact=compact, union=union_out, permuted=permuted,
        permuted_order=order if permuted_mode else None,
        nonnegative=winners and module.activation in _NONNEGATIVE))
  return dense


def _intercept(tracker: _Tracker, fractions, path, cost_model, profile, allow, next_fun, args,
               kwargs, context):
  module = context.module
  if not isinstance(module, DynamicConv) or context.method_name != "__call__":
    return next_fun(*args, **kwargs)
  bound = dict(zip(("x", "train", "residual"), args))
  bound.update(kwargs)
  policy = Policy.create(module.policy)
  if bound.get("train", False) or not policy.gated:
    return next_fun(*args, **kwargs)
  out = sparse_dynamic_conv(module, bound["x"], bound.get("residual"), tracker, fractions,
                            path, cost_model, profile, allow)
  return next_fun(*args, **kwargs) if out is None else out


def sparse_apply(model: nn.Module, variables, x: jax.Array, *,
                 bucket_fractions: Sequence[float] = DEFAULT_BUCKETS, path: str = "auto",
                 cost_model: CostModel | None = None,
                 profile: Mapping[str, Any] | None = None, allow: Sequence[str] = PLANS,
                 return_plans: bool = False, **apply_kwargs):
  """Eval-mode `model.apply(variables, x, train=False)`, active channels only.

  Args:
    model: a dynjax model (any Flax module built from `DynamicConv`).
    variables: its `{"params", "batch_stats"}`.
    x: input `[N, H, W, C]`.
    bucket_fractions: union-size buckets, as fractions of each layer's width
      (C is always a bucket). Fewer buckets, fewer compiled branches; finer
      buckets, less padding work.
    path: "auto": per layer, the plans the cost model predicts to pay, the
      cheapest one that fits the batch chosen at run time; "dense",
      "union" or "per_example" force that plan where a layer has it.
    cost_model: a `cost.CostModel` (None: the calibrated one for this
      platform, see `dynjax.sparse.cost`).
    profile: `{layer name: [(union_in, union_out), ...]}`: the batch's active
      input/output channel counts observed on sample batches of this size
      (`SparseExecutor.fit` collects them); "auto" then compiles only the
      union sizes those counts say will pay. None: every size predicted to pay.
    allow: the plans "auto" may choose from (the dense plan always).
    return_plans: also return a list of `PlanRecord`s, one per gated layer.
    **apply_kwargs: passed to `model.apply`.

  Returns:
    The model output, equal to the masked-dense eval forward within float
    tolerance (and the plan records). Traceable: wrap in `jax.jit` (or use
    `SparseExecutor`).
  """
  tracker = _Tracker()
  _check_path(path)
  bucket_sizes(1, bucket_fractions)  # validate
  for plan in allow:
    if plan not in PLANS:
      raise ValueError(f"allow: unknown plan {plan!r}; expected some of {PLANS}")
  intercept = functools.partial(_intercept, tracker, tuple(bucket_fractions), path, cost_model,
                                profile, tuple(allow))
  with nn.intercept_methods(intercept):
    out = model.apply(variables, x, train=False, **apply_kwargs)
  return (out, tracker.plans) if return_plans else out


# The plan sets `SparseExecutor.fit(measure=True)` times against each other.
VARIANTS = (PLANS, ("dense", "union"), ("dense", "per_example"), ("dense",))
# ... and keeps a sparse one only when it measured at most this fraction of the
# all-dense program's time.
FIT_MARGIN = 0.95


class SparseExecutor:
  """A jitted `sparse_apply` for one model, specialised to the inputs it sees.

  `fit(variables, sample_batches)` observes, per batch size, how many input
  and output channels each gated layer's batch union holds, compiles the
  plans those counts say will pay, and (`measure=True`) times that program
  against the same with fewer plan kinds and against the model's own masked
  forward, in interleaved rounds (median per program), keeping the fastest
  (a sparse one only if at least 5% faster; otherwise the masked forward):
  a cost-model error then cannot make the executor slower than the masked
  model on inputs like the samples. The first call at
  a batch size that was not fitted fits on that batch (`auto_fit`). Every
  input is computed exactly: a batch whose counts exceed the compiled union
  sizes runs each layer's fallback plan.

  Example:
    executor = SparseExecutor(model).fit(variables, sample_batches)
    logits = executor(variables, images)      # [N, num_classes]
  """

  def __init__(self, model: nn.Module, bucket_fractions: Sequence[float] = DEFAULT_BUCKETS,
               path: str = "auto", cost_model: CostModel | None = None,
               auto_fit: bool = True):
    bucket_sizes(1, bucket_fractions)  # validate early
    _check_path(path)
    self.model = model
    self.bucket_fractions = tuple(bucket_fractions)
    self.path = path
    self.cost_model = cost_model
    self.auto_fit = auto_fit and path == "auto"
    self.profiles: dict[int, dict[str, list[tuple[int, int]]]] = {}
    self.allowed: dict[int, tuple[str, ...]] = {}
    self.timings: dict[int, dict[tuple[str, ...], float]] = {}
    self._fns: dict[Any, Callable] = {}
    self._observe = jax.jit(functools.partial(self._counts, model, self.bucket_fractions))

  @staticmethod
  def _counts(model, fractions, variables, x):
    _, records = sparse_apply(model, variables, x, bucket_fractions=fractions, path="dense",
                              return_plans=True)
    return {r.name: jnp.stack([r.union_in, r.union_out]) for r in records}

  def fit(self, variables, batches: Sequence[jax.Array], measure: bool = True) -> "SparseExecutor":
    """Profiles the union counts on `batches` and (`measure`) picks the fastest plan set."""
    sizes = []
    for x in batches:
      counts = jax.device_get(self._observe(variables, x))
      profile = self.profiles.setdefault(x.shape[0], {})
      for name, c in counts.items():
        profile.setdefault(name, []).append((int(c[0]), int(c[1])))
      if x.shape[0] not in sizes:
        sizes.append(x.shape[0])
    for n in sizes:
      self.allowed.pop(n, None)
      if measure and self.path == "auto":
        same = [(variables, x) for x in batches if x.shape[0] == n]
        seconds = interleaved_seconds([self._build(n, a) for a in VARIANTS], same)
        timings = dict(zip(VARIANTS, seconds))
        fastest = min(timings, key=timings.get)
        # Sparse only when clearly faster: timings move by a few percent between
        # runs, and the all-dense program is the masked model's work.
        if timings[fastest] > FIT_MARGIN * timings[("dense",)]:
          fastest = ("dense",)
        self.timings[n], self.allowed[n] = timings, fastest
    return self

  def _build(self, batch: int | None, allow: tuple[str, ...]) -> Callable:
    key = (batch if batch in self.profiles else None, allow)
    if key not in self._fns and allow == ("dense",) and self.path == "auto":
      # Nothing sparse pays: run the model's own masked forward, exactly.
      self._fns[key] = jax.jit(functools.partial(self.model.apply, train=False))
    if key not in self._fns:
      self._fns[key] = jax.jit(functools.partial(
          sparse_apply, self.model, bucket_fractions=self.bucket_fractions, path=self.path,
          cost_model=self.cost_model, profile=self.profiles.get(batch), allow=allow))
    return self._fns[key]

  def function(self, batch: int | None = None) -> Callable:
    """The jitted `(variables, x) -> logits` used for batches of size `batch`."""
    return self._build(batch, self.allowed.get(batch, PLANS))

  def __call__(self, variables, x: jax.Array) -> jax.Array:
    n = x.shape[0]
    if self.auto_fit and n not in self.profiles and not isinstance(x, jax.core.Tracer):
      self.fit(variables, [x])
    return self.function(n)(variables, x)

  def plans(self, variables, x: jax.Array) -> list[dict[str, Any]]:
    """Per gated layer: its compiled plans, the one that ran, the union counts."""
    static = []
    n = x.shape[0]

    def run(variables, x):
      _, records = sparse_apply(self.model, variables, x, bucket_fractions=self.bucket_fractions,
                                path=self.path, cost_model=self.cost_model,
                                profile=self.profiles.get(n), allow=self.allowed.get(n, PLANS),
                                return_plans=True)
      static[:] = records
      return [(r.selected, r.union_in, r.union_out) for r in records]

    traced = jax.jit(run)(variables, x)
    return [dict(name=r.name, candidates=r.candidates, selected=int(sel),
                 plan=r.candidates[int(sel)][:3], union_in=int(u_in), union_out=int(u_out),
                 c_in=r.c_in, c_out=r.c_out) for r, (sel, u_in, u_out) in zip(static, traced)]
