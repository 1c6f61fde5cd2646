"""A jaxpr flattened into one list of nodes, with module paths and sample axes.

`flatten` inlines every call-like primitive (jit, custom_jvp/vjp, remat, ...)
so the rest of the counter sees one straight-line program of `Node`s whose
operands are integer value ids or `Const`s. Loops and branches stay single
opaque nodes (they are evaluated as a whole); the MAC-bearing equations inside
them are collected separately by `loop_mac_eqns`, each with the number of
times it runs.

`sample_axes` then finds, for every value, which axis indexes the examples of
the batch: `(axis, inner)` means axis `axis` has `N * inner` entries ordered
example-major (`inner == 1` for an ordinary batch axis, `inner > 1` when the
batch was folded into e.g. the channel axis, as CondConv's batched lowering
does), or None when the value does not depend on the example (parameters).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import numpy as np

from dynjax.flops import primitives as P

try:
  from jax.extend.core import Literal
except ImportError:  # older JAX
  from jax.core import Literal

_PATH_PART = re.compile(r"^\w+$")


@dataclasses.dataclass(frozen=True)
class Const:
  """A literal or closed-over constant operand."""
  value: Any


@dataclasses.dataclass
class Node:
  """One equation of the flattened program.

  Attributes:
    prim: the JAX primitive object.
    inputs: operand value ids (int) or `Const`s.
    outputs: result value ids.
    params: the equation's parameters.
    path: module path of the equation (e.g. `"layer1/conv"`).
  """
  prim: Any
  inputs: tuple
  outputs: tuple
  params: dict
  path: str


@dataclasses.dataclass
class Graph:
  """A flattened program: nodes in execution order and the shapes of values."""
  nodes: list
  shapes: dict  # value id -> shape tuple
  dtypes: dict  # value id -> numpy dtype
  inputs: list  # value ids of the flat arguments
  outputs: list  # value ids or Consts of the flat results

  def shape(self, ref) -> tuple:
    if isinstance(ref, Const):
      return tuple(np.shape(ref.value))
    return self.shapes[ref]


def module_path(stack: str) -> str:
  """Module path from a name stack: drops method and transform scopes."""
  return "/".join(p for p in stack.split("/") if _PATH_PART.match(p))


def sub_jaxpr(prim, params):
  """`(jaxpr, consts)` of a call-like primitive's body."""
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = params.get(key)
    if sub is None:
      continue
    if hasattr(sub, "jaxpr"):  # ClosedJaxpr
      return sub.jaxpr, list(sub.consts)
    if hasattr(sub, "eqns"):
      return sub, []
  raise ValueError(f"no sub-jaxpr in the parameters of {prim}")


def _is_literal(atom) -> bool:
  return isinstance(atom, Literal)


class _Builder:

  def __init__(self):
    self.nodes, self.shapes, self.dtypes = [], {}, {}
    self._next = 0

  def fresh(self, aval) -> int:
    ref = self._next
    self._next += 1
    self.shapes[ref] = tuple(getattr(aval, "shape", ()))
    self.dtypes[ref] = getattr(aval, "dtype", None)
    return ref

  def inline(self, jaxpr, consts, in_refs, prefix: str) -> list:
    env = {}
    for var, c in zip(jaxpr.constvars, consts):
      env[var] = Const(c)
    for var, ref in zip(jaxpr.invars, in_refs):
      env[var] = ref
    read = lambda a: Const(a.val) if _is_literal(a) else env[a]
    for eqn in jaxpr.eqns:
      stack = str(eqn.source_info.name_stack)
      path = "/".join(p for p in (prefix, module_path(stack)) if p)
      ins = [read(a) for a in eqn.invars]
      if eqn.primitive in P.CALLS:
        body, body_consts = sub_jaxpr(eqn.primitive, eqn.params)
        # custom_jvp/vjp bodies may take fewer operands than the call passes.
        results = self.inline(body, body_consts, ins[len(ins) - len(body.invars):], path)
        for var, ref in zip(eqn.outvars, results):
          env[var] = ref
        continue
      outs = tuple(self.fresh(v.aval) for v in eqn.outvars)
      for var, ref in zip(eqn.outvars, outs):
        env[var] = ref
      self.nodes.append(Node(eqn.primitive, tuple(ins), outs, dict(eqn.params), path))
    return [read(a) for a in jaxpr.outvars]


def flatten(closed_jaxpr) -> Graph:
  """Flatten a ClosedJaxpr, inlining call-like primitives."""
  b = _Builder()
  in_refs = [b.fresh(v.aval) for v in closed_jaxpr.jaxpr.invars]
  outs = b.inline(closed_jaxpr.jaxpr, list(closed_jaxpr.consts), in_refs, "")
  return Graph(b.nodes, b.shapes, b.dtypes, in_refs, outs)


def loop_eqns(node: Node, notes: list) -> list:
  """The equations inside a loop/branch node, call-like bodies inlined.

  Returns `(eqn, path, times, branch)` tuples: scan bodies run `length`
  times; every branch of a cond is returned with a `branch` key
  `(cond_id, index)` so the caller can keep the costliest one; a while body is
  counted once (its trip count is not static), with a note.
  """
  found = []

  def visit(prim, params, path, times, branch):
    if prim in P.CALLS:
      walk(sub_jaxpr(prim, params)[0], path, times, branch)
    elif prim is P.SCAN:
      walk(params["jaxpr"].jaxpr, path, times * int(params["length"]), branch)
    elif prim is P.COND:
      for i, br in enumerate(params["branches"]):
        walk(br.jaxpr, path, times, (id(params["branches"]), i))
    elif prim is P.WHILE:
      notes.append(f"while loop at '{path}': body MACs counted once per call")
      walk(params["body_jaxpr"].jaxpr, path, times, branch)
      walk(params["cond_jaxpr"].jaxpr, path, times, branch)
    else:
      return False
    return True

  def walk(jaxpr, prefix, times, branch):
    for eqn in jaxpr.eqns:
      stack = module_path(str(eqn.source_info.name_stack))
      path = "/".join(p for p in (prefix, stack) if p)
      if not visit(eqn.primitive, eqn.params, path, times, branch):
        found.append((eqn, path, times, branch))

  visit(node.prim, node.params, node.path, 1, None)
  return found


# ----------------------------------------------------------------------------
# Sample-axis tracking.


def _reshape_loc(loc, in_shape, out_shape):
  """Where a sample axis ends up after a reshape (kept, split or merged)."""
  axis, inner = loc
  size = in_shape[axis]
  n = size // inner
  prefix = math.prod(in_shape[:axis])
  for j, d in enumerate(out_shape):
    if math.prod(out_shape[:j]) != prefix or (d == 1 and size != 1):
      continue
    if d == size:
      return (j, inner)
    if d < size and d % n == 0 and inner % (d // n) == 0:
      return (j, d // n)  # split off the trailing part of the folded axis
    if d > size and d % size == 0:
      rest, m = d // size, axis + 1
      while m <= len(in_shape) and math.prod(in_shape[axis + 1:m]) < rest:
        m += 1
      if math.prod(in_shape[axis + 1:m]) == rest:
        return (j, inner * rest)  # merged with the following axes
    return None
  return None


def _conv_loc(node, locs, shapes):
  dn = node.params["dimension_numbers"]
  lhs_loc = locs[0]
  if lhs_loc is None:
    return None
  axis, inner = lhs_loc
  if axis == dn.lhs_spec[0] and inner == 1 and node.params.get("batch_group_count", 1) == 1:
    return (dn.out_spec[0], 1)
  if axis == dn.lhs_spec[1] and inner > 1:
    lhs = shapes[0]
    n = lhs[axis] // inner
    groups = node.params["feature_group_count"]
    if lhs[dn.lhs_spec[0]] == 1 and groups % n == 0:
      out_features = node.out_shapes[0][dn.out_spec[1]]
      return (dn.out_spec[1], out_features // n)
  return None


def _dot_loc(node, locs, shapes):
  (lc, rc), (lb, rb) = node.params["dimension_numbers"]
  lhs_free = [d for d in range(len(shapes[0])) if d not in lc and d not in lb]
  rhs_free = [d for d in range(len(shapes[1])) if d not in rc and d not in rb]
  for side, (batch, free, offset) in enumerate(
      ((lb, lhs_free, len(lb)), (rb, rhs_free, len(lb) + len(lhs_free)))):
    loc = locs[side]
    if loc is None or loc[1] != 1:
      continue
    if loc[0] in batch:
      return (list(batch).index(loc[0]), 1)
    if loc[0] in free:
      return (offset + free.index(loc[0]), 1)
  return None


def node_out_locs(node: Node, locs: Sequence, shapes: Sequence, out_shapes) -> list:
  """Sample axes of a node's outputs from those of its inputs."""
  node.out_shapes = out_shapes
  prim, params = node.prim, node.params
  if all(l is None for l in locs):
    return [None] * len(out_shapes)
  if prim is P.CONV:
    return [_conv_loc(node, locs, shapes)]
  if prim is P.DOT:
    return [_dot_loc(node, locs, shapes)]
  loc = next((l for l in locs if l is not None), None)
  src = shapes[locs.index(loc)]
  if prim is P.BROADCAST_IN_DIM:
    return [(params["broadcast_dimensions"][loc[0]], loc[1])
            if out_shapes[0][params["broadcast_dimensions"][loc[0]]] == src[loc[0]] else None]
  if prim is P.RESHAPE:
    return [_reshape_loc(loc, src, out_shapes[0])]
  if prim is P.TRANSPOSE:
    return [(list(params["permutation"]).index(loc[0]), loc[1])]
  if prim in P.REDUCTIONS or prim is P.SQUEEZE:
    axes = params.get("axes", params.get("dimensions", ()))
    if loc[0] in axes:
      return [None] * len(out_shapes)
    return [(loc[0] - sum(a < loc[0] for a in axes), loc[1])] * len(out_shapes)
  if prim in P.IDENTITY:
    return list(locs[:len(out_shapes)])
  # Anything else: an output with the operand's rank and the same extent on
  # the sample axis keeps it (elementwise ops, slices along other axes,
  # top_k over the last axis, scan carries, ...).
  # Operands whose sample axis is a plain axis (block 1) are preferred over
  # ones where it is folded into another axis: at batch 1 both describe the
  # same tensor, but only the plain one survives later reductions and dots.
  candidates = sorted(zip(locs, shapes), key=lambda ls: ls[0] is None or ls[0][1] != 1)
  result = []
  for out in out_shapes:
    match = None
    for l, s in candidates:
      if l is not None and len(out) == len(s) and out[l[0]] == s[l[0]]:
        match = l
        break
    result.append(match)
  return result


def sample_axes(graph: Graph, batched_inputs: Sequence[bool]) -> dict:
  """Sample axis of every value id (None where it has none)."""
  locs = {ref: ((0, 1) if flag and len(graph.shapes[ref]) > 0 else None)
          for ref, flag in zip(graph.inputs, batched_inputs)}
  for node in graph.nodes:
    in_locs = [None if isinstance(r, Const) else locs.get(r) for r in node.inputs]
    shapes = [graph.shape(r) for r in node.inputs]
    out_shapes = [graph.shapes[o] for o in node.outputs]
    for ref, loc in zip(node.outputs, node_out_locs(node, in_locs, shapes, out_shapes)):
      locs[ref] = loc
  return locs
