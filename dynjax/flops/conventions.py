"""MAC accounting conventions: ours (exact) and the published ones.

- `exact` (default): every convolution and dot_general of the program at
  integer active channels, per example: an input channel counts when it is
  non-zero for that example, an output channel when it is needed (not killed
  by a zero multiplier before anything mixes channels). Gate heads, routers
  and CondConv kernel mixing are counted like any other op. The dense
  baseline is the same program at full density.
- `fbs_condconv_paper`: the seed paper's Table 1 (docs/methods.md#counting-macs):
  fractional channels, MACs = dense * d_in * d_out with d_out = d for gated
  layers and d_in = d for layers fed by a gated layer (the RGB input stays
  dense), plus the CondConv kernel mixing (n MACs per surviving kernel weight)
  only when d < 1; gate heads and routers are not counted. Needs `density`;
  the dense baseline excludes gate heads and kernel mixing.
- `ftwt_code`: the FTWT code's accounting (docs/methods.md#counting-macs): gated convolutions
  only, `A_l * Ho*Wo * floor(prev / groups) * k^2` with `A_l` the layer's
  active output channels for the example and `prev` the previous gated
  layer's (the first gated layer's input channels for the first). Its dense
  baseline is every non-gate op at full width (the thop-style `args.macs`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

CONVENTIONS = ("exact", "fbs_condconv_paper", "ftwt_code")


@dataclasses.dataclass
class OpCost:
  """One op under a convention: per-example MACs and active fractions."""
  macs: np.ndarray  # [N]
  dense: float  # dense per-example MACs in this convention's baseline
  in_active: np.ndarray  # [N]
  out_active: np.ndarray  # [N]


def _full(n, value):
  return np.full((n,), float(value))


def _dense(op, n):
  return op.total * op.times / n


def exact(analysis, counts) -> list:
  """Per-op costs under the exact convention (dense where unmeasured)."""
  n = analysis.batch_size
  costs = []
  for i, op in enumerate(analysis.ops):
    dense = _dense(op, n)
    if counts is None or i not in counts:
      costs.append(OpCost(_full(n, dense), dense, _full(n, 1), _full(n, 1)))
      continue
    a, b = (np.asarray(x, np.int64) for x in counts[i])
    rows = a.shape[0]
    if op.geometry is not None:
      g = op.geometry
      per_row = g.kernel * g.out_spatial * (a * b).sum(-1) * op.times
      per_example = op.examples_folded or 1
      in_frac = a.sum(-1) / (g.cin // per_example)
      out_frac = b.sum(-1) / (g.cout // per_example)
    else:
      per_row = (a * b).sum(-1) * op.times
      out_frac = a.sum(-1) / (op.total / op.contract / rows)
      in_frac = b.sum(-1) / (op.contract * b.shape[1])
    if op.mode == "shared":
      per_row = _full(n, per_row.sum() / n)
      in_frac, out_frac = _full(n, in_frac.mean()), _full(n, out_frac.mean())
    costs.append(OpCost(per_row.astype(float), dense, in_frac, out_frac))
  return costs


def fbs_condconv_paper(analysis, density: float) -> list:
  """Per-op costs under the seed's Table 1 convention at density d."""
  if not 0.0 < density <= 1.0:
    raise ValueError(f"density must be in (0, 1], got {density!r}")
  n, ops = analysis.batch_size, analysis.ops

  def densities(op):
    d_out = density if op.gated else 1.0
    d_in = density if any(ops[k].gated for k in op.inputs_from) else 1.0
    return d_in, d_out

  costs = []
  for op in ops:
    dense = _dense(op, n)
    if op.overhead:
      costs.append(OpCost(_full(n, 0), 0.0, _full(n, 0), _full(n, 0)))
    elif op.kernel_of is not None:
      d_in, d_out = densities(ops[op.kernel_of])
      macs = dense * d_in * d_out if density < 1 else 0.0
      costs.append(OpCost(_full(n, macs), 0.0, _full(n, d_in), _full(n, d_out)))
    else:
      d_in, d_out = densities(op)
      costs.append(OpCost(_full(n, dense * d_in * d_out), dense, _full(n, d_in), _full(n, d_out)))
  return costs


def ftwt_code(analysis, counts) -> list:
  """Per-op costs under the FTWT code's accounting."""
  n = analysis.batch_size
  measured = exact(analysis, counts)
  costs, prev = [], None
  for op, cost in zip(analysis.ops, measured):
    dense = 0.0 if op.overhead else cost.dense
    if op.overhead or not op.gated or op.geometry is None:
      costs.append(OpCost(_full(n, 0), dense, _full(n, 0), _full(n, 0)))
      continue
    g = op.geometry
    per_example = op.examples_folded or 1
    cin, cout = g.cin // per_example, g.cout // per_example
    groups = g.groups // per_example
    active = np.rint(cost.out_active * cout)
    if prev is None:
      prev = _full(n, cin)
    macs = active * g.out_spatial * np.floor(prev / groups) * g.kernel * op.times
    costs.append(OpCost(macs, dense, prev / cin, active / cout))
    prev = active
  return costs


def compute(name: str, analysis, counts, **params) -> list:
  """Per-op costs under convention `name`."""
  if name == "exact":
    return exact(analysis, counts)
  if name == "ftwt_code":
    return ftwt_code(analysis, counts)
  if name == "fbs_condconv_paper":
    if "density" not in params:
      raise ValueError("convention 'fbs_condconv_paper' needs density=d")
    return fbs_condconv_paper(analysis, params["density"])
  raise ValueError(f"unknown convention {name!r}; allowed: {', '.join(CONVENTIONS)}")
