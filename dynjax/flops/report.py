"""The counter's result: per-layer rows, per-example totals, a readable table."""

from __future__ import annotations

import dataclasses

import numpy as np

from dynjax.flops import conventions


@dataclasses.dataclass
class LayerRow:
  """One convolution / dot_general.

  Attributes:
    path: module path (root module name removed), e.g. `"conv3/conv"`.
    primitive: `"conv_general_dilated"` or `"dot_general"`.
    dense_macs: MACs per example at full density (0 when the convention
      leaves the op out of its baseline).
    macs_mean, macs_min, macs_max: counted MACs per example over the batch.
    in_active, out_active: mean fraction of active input / needed output
      channels (contracting entries / outputs for a dot).
    gated: its output is multiplied by a per-example gate.
  """
  path: str
  primitive: str
  dense_macs: float
  macs_mean: float
  macs_min: float
  macs_max: float
  in_active: float
  out_active: float
  gated: bool


def _strip_root(paths):
  parts = [p.split("/") for p in paths]
  if parts and all(len(p) > 0 and p[0] == parts[0][0] for p in parts) and any(
      len(p) > 1 for p in parts):
    return ["/".join(p[1:]) for p in parts]
  return list(paths)


@dataclasses.dataclass
class Report:
  """MACs of one call, per example, under one convention.

  Attributes:
    convention: `exact`, `fbs_condconv_paper` or `ftwt_code`.
    batch_size: N.
    measured: True when counted on real inputs (mask-aware), False for a
      dense, trace-only count.
    rows: per-op `LayerRow`s in execution order.
    dense_macs: dense MACs per example (this convention's baseline).
    macs_per_example: `[N]` counted MACs of every example.
    unknown_primitives: primitives without a rule (name -> occurrences);
      they were evaluated but may hide MACs.
    notes: caveats (while loops, ...).
    layer_macs: `[len(rows), N]` counted MACs of every op and example.
  """
  convention: str
  batch_size: int
  measured: bool
  rows: list
  dense_macs: float
  macs_per_example: np.ndarray
  unknown_primitives: dict
  notes: list
  layer_macs: np.ndarray = dataclasses.field(default=None, repr=False)
  analysis: object = dataclasses.field(default=None, repr=False)
  counts: object = dataclasses.field(default=None, repr=False)
  params: dict = dataclasses.field(default_factory=dict)

  @property
  def macs_mean(self) -> float:
    return float(np.mean(self.macs_per_example))

  @property
  def dynamic_macs(self) -> float:
    """Mean counted MACs per example (alias of `macs_mean`)."""
    return self.macs_mean

  @property
  def macs_min(self) -> float:
    return float(np.min(self.macs_per_example))

  @property
  def macs_max(self) -> float:
    return float(np.max(self.macs_per_example))

  @property
  def reduction(self) -> float:
    """1 - mean / dense (0.75 means a quarter of the dense MACs)."""
    return 1.0 - self.macs_mean / self.dense_macs if self.dense_macs else 0.0

  @property
  def speedup(self) -> float:
    return self.dense_macs / self.macs_mean if self.macs_mean else float("inf")

  def under(self, convention: str, **params) -> "Report":
    """The same call counted under another convention (see `conventions`)."""
    return _assemble(self.analysis, self.counts, convention, params)

  def active_fractions(self) -> dict:
    """`{path: (in_active, out_active)}` of every gated layer."""
    return {r.path: (r.in_active, r.out_active) for r in self.rows if r.gated}

  def to_dict(self) -> dict:
    return dict(
        convention=self.convention, batch_size=self.batch_size, measured=self.measured,
        dense_macs=self.dense_macs, macs_mean=self.macs_mean, macs_min=self.macs_min,
        macs_max=self.macs_max, reduction=self.reduction,
        rows=[dataclasses.asdict(r) for r in self.rows],
        unknown_primitives=dict(self.unknown_primitives), notes=list(self.notes),
        params=dict(self.params))

  def table(self) -> str:
    """A fixed-width per-layer table with totals."""
    head = ("layer", "op", "dense", "mean", "min", "max", "in", "out", "gated")
    width = max([len(head[0])] + [len(r.path) for r in self.rows])
    fmt = f"{{:<{width}}}  {{:<5}} {{:>12}} {{:>12}} {{:>12}} {{:>12}} {{:>5}} {{:>5}} {{:>5}}"
    lines = [fmt.format(*head)]
    for r in self.rows:
      op = "conv" if r.primitive.startswith("conv") else "dot"
      lines.append(fmt.format(r.path or "-", op, _int(r.dense_macs), _int(r.macs_mean),
                              _int(r.macs_min), _int(r.macs_max), f"{r.in_active:.2f}",
                              f"{r.out_active:.2f}", "yes" if r.gated else ""))
    lines.append(fmt.format("total", "", _int(self.dense_macs), _int(self.macs_mean),
                            _int(self.macs_min), _int(self.macs_max), "", "", ""))
    extra = f", {self.params}" if self.params else ""
    lines.append(f"convention: {self.convention}{extra}; batch {self.batch_size}; "
                 f"{'measured on the inputs' if self.measured else 'dense (trace only)'}; "
                 f"{self.macs_mean / 1e6:.2f} M MACs per example, dense "
                 f"{self.dense_macs / 1e6:.2f} M, reduction {100 * self.reduction:.1f}%")
    if self.unknown_primitives:
      lines.append(f"unknown primitives (no rule, may hide MACs): {self.unknown_primitives}")
    for note in self.notes:
      lines.append(f"note: {note}")
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.table()


def _int(x) -> str:
  return f"{int(round(x)):,}"


def _assemble(analysis, counts, convention, params) -> Report:
  costs = conventions.compute(convention, analysis, counts, **params)
  n = analysis.batch_size
  paths = _strip_root([op.path for op in analysis.ops])
  rows = [LayerRow(p, op.primitive, float(c.dense), float(np.mean(c.macs)),
                   float(np.min(c.macs)), float(np.max(c.macs)), float(np.mean(c.in_active)),
                   float(np.mean(c.out_active)), op.gated)
          for p, op, c in zip(paths, analysis.ops, costs)]
  total = np.zeros((n,))
  for c in costs:
    total = total + c.macs
  layer_macs = np.stack([c.macs for c in costs]) if costs else np.zeros((0, n))
  return Report(convention, n, counts is not None, rows, float(sum(c.dense for c in costs)),
                total, dict(analysis.unknown), list(analysis.notes), layer_macs, analysis,
                counts, dict(params))


def build_report(analysis, counts) -> Report:
  """The exact-convention report of a measured (or dense-only) call."""
  return _assemble(analysis, counts, "exact", {})
