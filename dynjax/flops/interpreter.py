"""Trace a function, find its MAC-bearing ops and measure them on real inputs.

`Counter(fn)` traces `fn` to a jaxpr (CondConv layers lowered as one kernel
`dot_general` + one batch-folded convolution, so kernel mixing costs n MACs
per kernel weight), flattens it (`graph.py`), and finds every convolution and
`dot_general` with its module path, its dense cost and its static role (is
its output gated by a per-example multiplier? which earlier op feeds it?).

Measuring runs ONE jitted function that re-evaluates the program and returns,
per op and per example, the active input channels (exactly non-zero) and the
needed output channels (liveness, see `rules.py`); the MACs are then summed on
the host. Its cost is about one forward pass; it is compiled once per input
signature and cached.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np

from dynjax.flops import primitives as P
from dynjax.flops import rules as R
from dynjax.flops.graph import Const, Graph, flatten, loop_eqns, sample_axes
from dynjax.layers.gating import is_overhead_scope



@dataclasses.dataclass
class MacOp:
  """One convolution or dot_general of the traced program.

  Attributes:
    path: module path (e.g. `"layer1/0/conv1/conv"`).
    primitive: `"conv_general_dilated"` or `"dot_general"`.
    total: MACs of one execution over the whole batch.
    times: executions per call (scan length; 1 outside loops).
    node: index in `Graph.nodes`, or None for ops inside loops (counted dense).
    mode: `"sample"` (a batch axis), `"folded"` (batch folded into
      features), or `"shared"` (no example axis: cost shared by the batch).
    geometry: `rules.ConvGeometry` for convolutions.
    side, sample, out_sample, contract: dot_general only: the operand holding
      the examples (0 or 1), its example axis and the output's (None when
      shared), and the contracted entries per example.
    gated: the output is multiplied by a per-example tensor before any
      channel-mixing op (a dynamic gate).
    inputs_from: ops whose output reaches this op's activation operand
      through channel-preserving ops only.
    kernel_of: for an op producing a convolution's kernel (CondConv mixing),
      the index of that convolution.
    overhead: lies in a registered gate's head or a CondConv router
      (`dynjax.layers.gating.is_overhead_scope`).
    examples_folded: N for a batch-folded convolution, else 0.
  """
  path: str
  primitive: str
  total: int
  times: int = 1
  node: int | None = None
  mode: str = "shared"
  geometry: Any = None
  side: int = 0
  sample: int | None = None
  out_sample: int | None = None
  contract: int = 1
  gated: bool = False
  inputs_from: tuple = ()
  kernel_of: int | None = None
  overhead: bool = False
  examples_folded: int = 0

  @property
  def in_channels(self) -> int:
    """Input channels (conv) or contracting entries (dot) per example."""
    g = self.geometry
    if g is None:
      return self.contract
    return g.cin // (self.examples_folded or 1)


@dataclasses.dataclass
class Analysis:
  """Everything known about a traced program before running it."""
  graph: Graph
  ops: list
  batch_size: int
  unknown: dict
  notes: list


def _batched_flags(args, batch_argnums):
  flags = []
  for i, a in enumerate(args):
    if batch_argnums is None:
      batched = not isinstance(a, collections.abc.Mapping) and not hasattr(a, "unfreeze")
    else:
      batched = i in batch_argnums
    flags += [batched] * len(jax.tree.leaves(a))
  return flags


def _chain(graph: Graph, start: int, consumers) -> set:
  """Values reached from `start` through channel-preserving ops."""
  seen, todo = {start}, [start]
  while todo:
    ref = todo.pop()
    for n in consumers.get(ref, ()):
      node = graph.nodes[n]
      rule = R.RULES.get(node.prim)
      if rule is None or not rule.transparent:
        continue
      for o in node.outputs:
        if o not in seen:
          seen.add(o)
          todo.append(o)
  return seen


def _is_gated(graph, chain, locs, consumers) -> bool:
  """Is a value of `chain` (full-size) multiplied by a smaller per-example one?"""
  size = lambda r: int(np.prod(graph.shape(r)))
  for ref in chain:
    for n in consumers.get(ref, ()):
      node = graph.nodes[n]
      if node.prim is not P.MUL or size(ref) != size(node.outputs[0]):
        continue
      for other in node.inputs:
        if isinstance(other, Const) or other in chain:
          continue
        if locs.get(other) is not None and size(other) < size(ref):
          return True
  return False


def analyse(closed_jaxpr, batched_flags: Sequence[bool]) -> Analysis:
  """Static analysis of a traced program (no execution)."""
  graph = flatten(closed_jaxpr)
  locs = sample_axes(graph, batched_flags)
  sizes = {graph.shapes[r][0] for r, f in zip(graph.inputs, batched_flags)
           if f and graph.shapes[r]}
  if len(sizes) > 1:
    raise ValueError(f"batched arguments disagree on the batch size: {sorted(sizes)}")
  batch = sizes.pop() if sizes else 1
  ops, unknown, notes = [], collections.Counter(), []
  consumers = collections.defaultdict(list)
  for n, node in enumerate(graph.nodes):
    for r in node.inputs:
      if not isinstance(r, Const):
        consumers[r].append(n)
  for n, node in enumerate(graph.nodes):
    rule = R.RULES.get(node.prim)
    if rule is None:
      unknown[node.prim.name] += 1
    elif node.prim is P.CONV or node.prim is P.DOT:
      ops.append(_top_level_op(graph, n, node, locs, batch))
    elif rule.kind == "loop":
      inner = []
      for eqn, path, times, branch in loop_eqns(node, notes):
        if eqn.primitive not in R.RULES:
          unknown[eqn.primitive.name] += 1
        elif eqn.primitive is P.CONV or eqn.primitive is P.DOT:
          op = _loop_op(eqn, path, times)
          inner.append((op, branch))
      ops += _costliest_branches(inner)
  index = {op.node: i for i, op in enumerate(ops) if op.node is not None}
  for i, op in enumerate(ops):
    if op.node is None:
      continue
    node = graph.nodes[op.node]
    chain = _chain(graph, node.outputs[0], consumers)
    op.gated = _is_gated(graph, chain, locs, consumers)
    for ref in chain:
      for n in consumers.get(ref, ()):
        if n not in index:
          continue
        target = ops[index[n]]
        pos = [k for k, r in enumerate(graph.nodes[n].inputs) if r == ref]
        if target.primitive == "conv_general_dilated" and 1 in pos and 0 not in pos:
          op.kernel_of = index[n]
        elif target.side in pos or (target.primitive == "conv_general_dilated" and 0 in pos):
          target.inputs_from = tuple(sorted(set(target.inputs_from) | {i}))
  for op in ops:
    op.overhead = any(is_overhead_scope(part) for part in op.path.split("/"))
  return Analysis(graph, ops, batch, dict(unknown), notes)


def _top_level_op(graph, n, node, locs, batch) -> MacOp:
  shapes = [graph.shape(r) for r in node.inputs]
  out_shape = graph.shapes[node.outputs[0]]
  in_locs = [None if isinstance(r, Const) else locs.get(r) for r in node.inputs]
  if node.prim is P.CONV:
    geom = R.conv_geometry(node.params, shapes[0], shapes[1], out_shape)
    loc, mode, folded = in_locs[0], "shared", 0
    out_loc = locs.get(node.outputs[0])
    if loc is not None and out_loc is not None:
      mode = "sample" if loc[1] == 1 else "folded"
      folded = 0 if loc[1] == 1 else shapes[0][loc[0]] // loc[1]
    return MacOp(node.path, node.prim.name, geom.total, node=n, mode=mode,
                 geometry=geom, examples_folded=folded)
  (lc, rc), _, _ = R.dot_dims(node.params, len(shapes[0]), len(shapes[1]))
  side = 0 if in_locs[0] is not None or in_locs[1] is None else 1
  loc, out_loc = in_locs[side], locs.get(node.outputs[0])
  sample = loc[0] if loc is not None and loc[1] == 1 and out_loc is not None else None
  contract = int(np.prod([shapes[side][d] for d in (lc if side == 0 else rc)]))
  return MacOp(node.path, node.prim.name, R.dot_total(node.params, shapes[0], out_shape),
               node=n, mode="sample" if sample is not None else "shared", side=side,
               sample=sample, out_sample=out_loc[0] if sample is not None else None,
               contract=contract)


def _loop_op(eqn, path, times) -> MacOp:
  shapes = [tuple(v.aval.shape) for v in eqn.invars]
  out_shape = tuple(eqn.outvars[0].aval.shape)
  if eqn.primitive is P.CONV:
    geom = R.conv_geometry(eqn.params, shapes[0], shapes[1], out_shape)
    return MacOp(path, eqn.primitive.name, geom.total, times=times, geometry=geom)
  return MacOp(path, eqn.primitive.name, R.dot_total(eqn.params, shapes[0], out_shape),
               times=times)


def _costliest_branches(inner) -> list:
  """Keep, for every cond, only the branch with the most MACs."""
  totals = collections.defaultdict(int)
  for op, branch in inner:
    if branch is not None:
      totals[branch] += op.total * op.times
  best = {}
  for (cond, idx), total in totals.items():
    if cond not in best or total > totals[(cond, best[cond])]:
      best[cond] = idx
  return [op for op, b in inner if b is None or best.get(b[0]) == b[1]]


# ----------------------------------------------------------------------------
# Measurement.


def _eval_node(node, ins, locs_folded):
  if node.prim is P.CONV and locs_folded and jax.default_backend() == "cpu":
    return [R.eval_folded_conv(ins[0], ins[1], node.params, locs_folded)]
  out = node.prim.bind(*ins, **node.params)
  return list(out) if node.prim.multiple_results else [out]


def measure_fn(analysis: Analysis):
  """A function of the flat arguments returning per-op activity counts."""
  graph, ops = analysis.graph, analysis.ops
  by_node = {op.node: i for i, op in enumerate(ops) if op.node is not None}

  def run(flat_args):
    env = dict(zip(graph.inputs, flat_args))
    val = lambda r: r.value if isinstance(r, Const) else env[r]
    activity = {}
    for n, node in enumerate(graph.nodes):
      ins = [val(r) for r in node.inputs]
      op = ops[by_node[n]] if n in by_node else None
      folded = op.examples_folded if op is not None else 0
      env.update(zip(node.outputs, _eval_node(node, ins, folded)))
      if op is not None and node.prim is P.CONV:
        activity[n] = R.conv_activity(ins[0], node.params)
    live = {}
    for r in graph.outputs:
      if not isinstance(r, Const):
        live[r] = True
    out_live = {}
    for n in range(len(graph.nodes) - 1, -1, -1):
      node = graph.nodes[n]
      outs = [live.get(o, False) for o in node.outputs]
      if n in by_node:
        out_live[n] = outs[0]
      if all(l is False for l in outs):
        continue
      rule = R.RULES.get(node.prim)
      fn = rule.liveness if rule is not None and rule.liveness else R.conservative
      ctx = R.LiveCtx(node, [val(r) for r in node.inputs],
                      [graph.shape(r) for r in node.inputs],
                      [graph.shapes[o] for o in node.outputs], outs, activity.get(n))
      for r, l in zip(node.inputs, fn(ctx)):
        if not isinstance(r, Const):
          live[r] = R.lor(live.get(r, False), l)
    counts = {}
    for n, i in by_node.items():
      node, op = graph.nodes[n], ops[i]
      out_shape = graph.shapes[node.outputs[0]]
      if node.prim is P.CONV:
        dn = node.params["dimension_numbers"]
        out_bf = R.batch_feature(out_live[n], dn.out_spec, out_shape)
        counts[i] = R.conv_counts(activity[n], out_bf, op.geometry, op.examples_folded)
      else:
        shapes = [graph.shape(r) for r in node.inputs]
        counts[i] = R.dot_counts(val(node.inputs[op.side]), out_live[n], node.params,
                                 op.side, op.sample, op.out_sample, shapes, out_shape)
    return counts

  return run


class Counter:
  """A reusable counter for one function (traces and compiles once per shape).

  Args:
    fn: any JAX-traceable function, e.g. `model.apply`.
    batch_argnums: positional arguments whose leaves have the batch on axis 0.
      Default: every positional argument that is not a mapping (so
      `apply(variables, x)` treats `x` as the batch, `variables` as shared).
    condconv_method: CondConv lowering used for tracing (`"batched"`: kernel
      mixing as one dot_general, then one conv; see `dynjax.layers.condconv`).
  """

  def __init__(self, fn, *, batch_argnums: Sequence[int] | None = None,
               condconv_method: str | None = "batched"):
    self.fn = fn
    self.batch_argnums = None if batch_argnums is None else tuple(batch_argnums)
    self.condconv_method = condconv_method
    self._cache = {}

  def _trace(self, args, kwargs):
    from dynjax.layers.condconv import method_override
    with method_override(self.condconv_method):
      return jax.make_jaxpr(functools.partial(self.fn, **kwargs))(*args)

  def _prepared(self, args, kwargs):
    leaves, tree = jax.tree.flatten(args)
    avals = tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves)
    try:
      key = (tree, avals, tuple(sorted(kwargs.items())))
      hash(key)
    except TypeError:
      key = None
    if key is not None and key in self._cache:
      return self._cache[key]
    analysis = analyse(self._trace(args, kwargs), _batched_flags(args, self.batch_argnums))
    entry = (analysis, jax.jit(measure_fn(analysis)))
    if key is not None:
      self._cache[key] = entry
    return entry

  def analyse(self, *args, **kwargs) -> Analysis:
    """Trace only (arguments may be `jax.ShapeDtypeStruct`s)."""
    return self._prepared(args, kwargs)[0]

  def __call__(self, *args, measure: bool | None = None, **kwargs):
    """Count `fn(*args, **kwargs)`; returns a `Report` (exact convention).

    With real arrays the count is mask-aware (measured on these inputs);
    with `jax.ShapeDtypeStruct`s, or `measure=False`, only the dense count.
    """
    from dynjax.flops.report import build_report
    analysis, run = self._prepared(args, kwargs)
    leaves = jax.tree.leaves(args)
    if measure is None:
      measure = not any(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    counts = None
    if measure:
      counts = jax.tree.map(np.asarray, jax.device_get(run(leaves)))
    return build_report(analysis, counts)


_COUNTERS: "collections.OrderedDict" = collections.OrderedDict()


def count(fn, *args, **kwargs):
  """MACs of `fn(*args, **kwargs)`: dense and mask-aware, per layer and total.

  `kwargs` are passed to `fn` as static values (e.g. `train=False`). Counters
  are cached per `fn`, so calling this at every evaluation re-uses the traced
  program and the compiled measuring function. Returns a `Report`.
  """
  try:
    counter = _COUNTERS.pop(fn)
  except (KeyError, TypeError):
    counter = Counter(fn)
  try:
    _COUNTERS[fn] = counter
    while len(_COUNTERS) > 16:
      _COUNTERS.popitem(last=False)
  except TypeError:
    pass
  return counter(*args, **kwargs)
