"""Per-primitive rules: MAC formulas and how "needed" flows backwards.

The registry `RULES` maps primitive objects to a `Rule`. Two primitives carry
MACs (`conv_general_dilated`, `dot_general`); every other registered primitive
costs zero. A primitive missing from the registry is evaluated but reported in
`Report.unknown_primitives`.

Liveness ("is this element needed by the function's result?") is what makes
the count mask-aware. It is propagated backwards through the program with the
real values at hand:

- `mul(a, b)`: an element of `a` is needed only where the product is needed
  *and* `b` is non-zero, so a 0/1 (or boosted) mask kills the channels it
  zeroes, wherever it sits after the producing layer (after BN, inside or
  after an activation, after a residual add);
- elementwise ops, data movement (reshape, transpose, broadcasts, slices,
  pooling, reductions): needed-ness follows the data exactly;
- `conv` / `dot`: an input channel is needed when some output channel of its
  group is needed; a kernel weight when its input and output channel are;
- anything else: if any output is needed, every input is (conservative).

Liveness arrays are boolean and only broadcast-compatible with the value they
describe (`[N, 1, 1, C]` for a channel mask), or the Python constants
True (all needed) / False (nothing needed), which keeps the pass cheap.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dynjax.flops import primitives as P


@dataclasses.dataclass(frozen=True)
class Rule:
  """How the counter treats one primitive.

  Attributes:
    kind: `"mac"` (carries MACs), `"free"` (zero MACs), `"call"` (body
      inlined), `"loop"` (scan / cond / while: body MACs counted with their
      trip count, evaluated as a whole).
    liveness: `fn(ctx) -> [liveness per operand]`, or None for the
      conservative rule (any needed output makes every operand needed).
    transparent: keeps channels apart (elementwise, data movement), so a mask
      multiplied after it still gates the producing layer.
  """
  kind: str
  liveness: Callable[["LiveCtx"], list] | None = None
  transparent: bool = False


@dataclasses.dataclass
class LiveCtx:
  """What a liveness rule sees for one node."""
  node: Any
  values: list  # operand values (arrays, or Const payloads)
  shapes: list  # operand shapes
  out_shapes: list
  out_lives: list  # per output: True / False / bool array
  stats: Any = None  # forward activity of a MAC node (conv: in_act [B, Cin])


# ----------------------------------------------------------------------------
# Liveness algebra on True / False / arrays.


def land(a, b):
  if a is False or b is False:
    return False
  if a is True:
    return b
  if b is True:
    return a
  return jnp.logical_and(a, b)


def lor(a, b):
  if a is True or b is True:
    return True
  if a is False:
    return b
  if b is False:
    return a
  return jnp.logical_or(a, b)


def nonzero(value):
  """`value != 0` as liveness (True when a constant is non-zero everywhere)."""
  if isinstance(value, (np.ndarray, np.generic, int, float, bool)):
    nz = np.asarray(value) != 0
    return True if nz.all() else jnp.asarray(nz)
  return value != 0


def unbroadcast(live, shape):
  """Liveness of an operand of `shape` from that of a broadcast result."""
  if live is True or live is False:
    return live
  if live.ndim < len(shape):
    live = live.reshape((1,) * (len(shape) - live.ndim) + live.shape)
  if len(shape) == 0:
    return jnp.any(live)
  axes = tuple(i for i, (s, l) in enumerate(zip(shape, live.shape)) if s == 1 and l != 1)
  return jnp.any(live, axis=axes, keepdims=True) if axes else live


def materialize(live, shape):
  return jnp.broadcast_to(jnp.asarray(live, bool), shape)


def conservative(ctx: LiveCtx) -> list:
  live = False if all(l is False for l in ctx.out_lives) else True
  return [live] * len(ctx.values)


def _elementwise(ctx: LiveCtx) -> list:
  return [unbroadcast(ctx.out_lives[0], s) for s in ctx.shapes]


def _identity(ctx: LiveCtx) -> list:
  return list(ctx.out_lives[:len(ctx.values)]) + [True] * (len(ctx.values) - len(ctx.out_lives))


def _mul(ctx: LiveCtx) -> list:
  a, b = ctx.values
  out = ctx.out_lives[0]
  return [unbroadcast(land(out, nonzero(b)), ctx.shapes[0]),
          unbroadcast(land(out, nonzero(a)), ctx.shapes[1])]


def _select_n(ctx: LiveCtx) -> list:
  pred, out = ctx.values[0], ctx.out_lives[0]
  lives = [unbroadcast(out, ctx.shapes[0])]
  for i, shape in enumerate(ctx.shapes[1:]):
    if isinstance(pred, (np.ndarray, np.generic, bool, int)):
      chosen = nonzero(np.asarray(pred) == i)
    else:
      chosen = pred == i if pred.dtype != jnp.bool_ else (pred if i else ~pred)
    lives.append(unbroadcast(land(out, chosen), shape))
  return lives


def _broadcast_in_dim(ctx: LiveCtx) -> list:
  live = ctx.out_lives[0]
  rest = [True] * (len(ctx.values) - 1)
  if live is True or live is False:
    return [live] + rest
  kept = ctx.node.params["broadcast_dimensions"]
  dropped = tuple(d for d in range(live.ndim) if d not in kept)
  live = jnp.any(live, axis=dropped) if dropped else live
  return [unbroadcast(live, ctx.shapes[0])] + rest


def _reshape(ctx: LiveCtx) -> list:
  live = ctx.out_lives[0]
  rest = [True] * (len(ctx.values) - 1)
  if live is True or live is False:
    return [live] + rest
  return [materialize(live, ctx.out_shapes[0]).reshape(ctx.shapes[0])] + rest


def _transpose(ctx: LiveCtx) -> list:
  live = ctx.out_lives[0]
  if live is True or live is False:
    return [live]
  return [jnp.transpose(live, np.argsort(ctx.node.params["permutation"]))]


def _squeeze(ctx: LiveCtx) -> list:
  live = ctx.out_lives[0]
  if live is True or live is False:
    return [live]
  return [jnp.expand_dims(live, tuple(sorted(ctx.node.params["dimensions"])))]


def _reduction(ctx: LiveCtx) -> list:
  live = False
  for l in ctx.out_lives:
    live = lor(live, l)
  if live is True or live is False:
    return [live] * len(ctx.values)
  axes = tuple(sorted(ctx.node.params["axes"]))
  return [jnp.expand_dims(live, axes)] * len(ctx.values)


def _linear_move(ctx: LiveCtx) -> list:
  """Liveness of data movement = its transpose applied to the needed mask."""
  if all(l is False for l in ctx.out_lives):
    return [False] * len(ctx.values)
  if all(l is True for l in ctx.out_lives):
    return [True] * len(ctx.values)
  target, data_args = P.LINEAR_MOVES[ctx.node.prim]
  data_args = range(len(ctx.values)) if data_args is None else data_args

  def f(*data):
    args = list(ctx.values)
    for i, d in zip(data_args, data):
      args[i] = d
    out = target.bind(*args, **ctx.node.params)
    return out if target.multiple_results else [out]

  zeros = [jnp.zeros(ctx.shapes[i], jnp.float32) for i in data_args]
  try:
    _, vjp = jax.vjp(f, *zeros)
    cots = vjp([materialize(l, s).astype(jnp.float32)
                for l, s in zip(ctx.out_lives, ctx.out_shapes)])
  except Exception:  # a movement op we cannot transpose: stay conservative
    return conservative(ctx)
  lives = [True] * len(ctx.values)
  for i, c in zip(data_args, cots):
    lives[i] = c != 0
  return lives


# ----------------------------------------------------------------------------
# Convolutions.


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
  """Shapes of one convolution, per example of the batch."""
  batch: int  # lhs batch extent B
  groups: int  # feature_group_count G
  cin: int  # total input features of the lhs
  cout: int  # total output features
  kernel: int  # kh * kw (product of the kernel's spatial extents)
  out_spatial: int  # Ho * Wo
  total: int  # MACs of the whole op (all B examples)


def conv_geometry(params, lhs_shape, rhs_shape, out_shape) -> ConvGeometry:
  dn = params["dimension_numbers"]
  kernel = math.prod(rhs_shape[d] for d in dn.rhs_spec[2:])
  out_spatial = math.prod(out_shape[d] for d in dn.out_spec[2:])
  total = math.prod(out_shape) * rhs_shape[dn.rhs_spec[1]] * kernel
  return ConvGeometry(lhs_shape[dn.lhs_spec[0]], params["feature_group_count"],
                      lhs_shape[dn.lhs_spec[1]], out_shape[dn.out_spec[1]],
                      kernel, out_spatial, total)


def batch_feature(x, spec, shape):
  """`[B, F]` any-over-spatial of a boolean tensor laid out by `spec`."""
  b, f = spec[0], spec[1]
  full = (shape[b], shape[f])
  if x is True or x is False:
    return jnp.full(full, x)
  spatial = tuple(spec[2:])
  x = jnp.any(x, axis=spatial, keepdims=True) if spatial else x
  x = jnp.transpose(x, (b, f) + spatial).reshape(x.shape[b], x.shape[f])
  return jnp.broadcast_to(x, full)


def place(bf, spec, ndim):
  """Inverse of `batch_feature`: `[B, F]` -> layout `spec` with 1-sized rest."""
  x = bf.reshape(bf.shape + (1,) * (ndim - 2))
  return jnp.transpose(x, np.argsort(tuple(spec)))


def conv_activity(lhs, params):
  """Forward statistic: `[B, Cin]` True where an input channel is non-zero."""
  dn = params["dimension_numbers"]
  return batch_feature(lhs != 0, dn.lhs_spec, lhs.shape)


def _conv(ctx: LiveCtx) -> list:
  params = ctx.node.params
  if params.get("batch_group_count", 1) != 1 or ctx.out_lives[0] is False:
    return conservative(ctx)
  dn = params["dimension_numbers"]
  groups = params["feature_group_count"]
  out = batch_feature(ctx.out_lives[0], dn.out_spec, ctx.out_shapes[0])  # [B, Cout]
  batch, cout = out.shape
  cin = ctx.shapes[0][dn.lhs_spec[1]]
  out_g = out.reshape(batch, groups, cout // groups)
  lhs = jnp.repeat(jnp.any(out_g, axis=-1), cin // groups, axis=1)  # [B, Cin]
  in_g = ctx.stats.reshape(batch, groups, cin // groups)
  kernel = jnp.any(in_g[:, :, :, None] & out_g[:, :, None, :], axis=0)  # [G, ci, co]
  kernel = jnp.transpose(kernel, (1, 0, 2)).reshape(cin // groups, cout)
  rhs_spec = (dn.rhs_spec[1], dn.rhs_spec[0]) + tuple(dn.rhs_spec[2:])
  return [place(lhs, dn.lhs_spec, len(ctx.shapes[0])),
          place(kernel, rhs_spec, len(ctx.shapes[1]))]


def conv_counts(in_act, out_live, geometry: ConvGeometry, folded_examples: int):
  """Per-row active (input, output) channels per group: two `[R, G]` arrays.

  Rows are the lhs batch, or the `folded_examples` examples folded into the
  feature axis (lhs batch 1, `G = examples * groups_per_example`).
  """
  rows = folded_examples or geometry.batch
  groups = geometry.groups // (folded_examples or 1)
  in_cnt = in_act.reshape(rows, groups, -1).sum(-1, dtype=jnp.int32)
  out_cnt = out_live.reshape(rows, groups, -1).sum(-1, dtype=jnp.int32)
  return in_cnt, out_cnt


def eval_folded_conv(lhs, rhs, params, examples: int):
  """A batch-folded conv (lhs batch 1) as `examples` sequential plain convs.

  XLA's CPU backend runs grouped convolutions with per-example kernels about
  10x slower than a loop of ordinary ones, so the counter evaluates them so.
  """
  dn = params["dimension_numbers"]
  lf, of = dn.lhs_spec[1], dn.rhs_spec[0]
  split = lambda x, axis: jnp.moveaxis(
      x.reshape(x.shape[:axis] + (examples, -1) + x.shape[axis + 1:]), axis, 0)
  sub = dict(params, feature_group_count=params["feature_group_count"] // examples)
  y = jax.lax.map(lambda a: P.CONV.bind(a[0], a[1], **sub), (split(lhs, lf), split(rhs, of)))
  yf = dn.out_spec[1]
  y = jnp.moveaxis(y, 0, yf)
  return y.reshape(y.shape[:yf] + (-1,) + y.shape[yf + 2:])


# ----------------------------------------------------------------------------
# dot_general.


def dot_dims(params, lhs_ndim, rhs_ndim):
  (lc, rc), (lb, rb) = params["dimension_numbers"]
  lf = [d for d in range(lhs_ndim) if d not in lc and d not in lb]
  rf = [d for d in range(rhs_ndim) if d not in rc and d not in rb]
  return (list(lc), list(rc)), (list(lb), list(rb)), (lf, rf)


def dot_total(params, lhs_shape, out_shape) -> int:
  (lc, _), _, _ = dot_dims(params, len(lhs_shape), 0)
  return math.prod(out_shape) * math.prod(lhs_shape[d] for d in lc)


def _dot(ctx: LiveCtx) -> list:
  live = ctx.out_lives[0]
  if live is True or live is False:
    return [live, live]
  (lc, rc), (lb, rb), (lf, rf) = dot_dims(ctx.node.params, len(ctx.shapes[0]), len(ctx.shapes[1]))
  live = materialize(live, ctx.out_shapes[0])
  nb = len(lb)
  out_lf = tuple(range(nb, nb + len(lf)))
  out_rf = tuple(range(nb + len(lf), live.ndim))
  lives = []
  for shape, batch, free, contract, drop in ((ctx.shapes[0], lb, lf, lc, out_rf),
                                             (ctx.shapes[1], rb, rf, rc, out_lf)):
    x = jnp.any(live, axis=drop) if drop else live  # (batch..., free...)
    x = x.reshape(x.shape + (1,) * len(contract))
    order = batch + free + contract
    lives.append(jnp.transpose(x, [order.index(d) for d in range(len(shape))]))
  return lives


def dot_counts(operand, out_live, params, side: int, sample, out_sample, shapes, out_shape):
  """Per-sample needed outputs L and active contracting entries C: `[R, Bt]`.

  `operand` is the side (0 lhs, 1 rhs) carrying the sample axis (or lhs when
  none does: then R = 1 and the op is shared by the batch). MACs per row are
  `sum(L * C)` over the remaining dot-batch index.
  """
  (lc, rc), (lb, rb), (lf, rf) = dot_dims(params, len(shapes[0]), len(shapes[1]))
  contract, batch, free = (lc, lb, lf) if side == 0 else (rc, rb, rf)
  keep_batch = [d for d in batch if d != sample]
  act = operand != 0
  drop = tuple(d for d in free if d != sample)
  # Counting over contracting dims, keeping (sample, other batch dims).
  order = ([sample] if sample is not None else []) + keep_batch
  act = jnp.any(act, axis=drop, keepdims=True) if drop else act
  act = jnp.sum(act, axis=tuple(contract), keepdims=True, dtype=jnp.int32)
  act = jnp.transpose(act, order + [d for d in range(act.ndim) if d not in order])
  act = act.reshape(act.shape[:len(order)])
  live = materialize(out_live, out_shape)
  out_batch = [batch.index(d) for d in keep_batch]  # out positions of other batch dims
  out_order = ([out_sample] if out_sample is not None else []) + out_batch
  rest = tuple(d for d in range(len(out_shape)) if d not in out_order)
  needed = jnp.sum(live, axis=rest, dtype=jnp.int32) if rest else live.astype(jnp.int32)
  kept = sorted(out_order)
  needed = jnp.transpose(needed, [kept.index(d) for d in out_order])
  rows = act.shape[0] if sample is not None else 1
  return needed.reshape(rows, -1), act.reshape(rows, -1)


# ----------------------------------------------------------------------------
# The registry.

RULES: dict = {}


def register_rule(primitive, rule: Rule) -> None:
  """Register (or replace) the rule for a primitive object."""
  if primitive is not None:
    RULES[primitive] = rule


def _register_defaults():
  for p in P.OTHER_FREE:
    register_rule(p, Rule("free"))
  for p in P.ELEMENTWISE:
    register_rule(p, Rule("free", _elementwise, transparent=True))
  for p in P.IDENTITY:
    register_rule(p, Rule("free", _identity, transparent=True))
  for p in P.REDUCTIONS:
    register_rule(p, Rule("free", _reduction, transparent=True))
  for p in P.LINEAR_MOVES:
    register_rule(p, Rule("free", _linear_move, transparent=True))
  register_rule(P.MUL, Rule("free", _mul, transparent=True))
  register_rule(P.SELECT_N, Rule("free", _select_n, transparent=True))
  register_rule(P.BROADCAST_IN_DIM, Rule("free", _broadcast_in_dim, transparent=True))
  register_rule(P.RESHAPE, Rule("free", _reshape, transparent=True))
  register_rule(P.TRANSPOSE, Rule("free", _transpose, transparent=True))
  register_rule(P.SQUEEZE, Rule("free", _squeeze, transparent=True))
  register_rule(P.CONV, Rule("mac", _conv))
  register_rule(P.DOT, Rule("mac", _dot))
  for p in P.CALLS:
    register_rule(p, Rule("call"))
  for p in (P.SCAN, P.COND, P.WHILE):
    register_rule(p, Rule("loop"))


_register_defaults()
