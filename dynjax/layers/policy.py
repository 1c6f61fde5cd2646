"""The gating policy: one small config that every model takes.

See docs/architecture.md#the-gating-policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from dynjax.layers.masks import FBS_TIE_RULES, num_winners

METHODS = ("dense", "fbs", "ftwt", "static")
FTWT_MODES = ("decoupled", "joint")
FTWT_TARGETS = ("mass", "uniform")
GATE_POOLS = ("avg", "max")
FBS_PREDICTOR_ACTS = ("relu", "layer")


@dataclasses.dataclass(frozen=True)
class Policy:
  """How a `DynamicConv` gates its output channels.

  Attributes:
    method: `dense`, `fbs`, `ftwt` or `static`.
    density: d in (0, 1]. FBS keeps k = ceil(d*C) winners; `static` builds
      ceil(d*C) channels.
    mass: r in (0, 1]. FTWT target keeps a fraction r of the heat-map mass
      (`target="mass"`), or prunes the fraction r of channels (`"uniform"`).
    mode: FTWT `decoupled` (gate input under stop_gradient) or `joint`.
    target: FTWT target mask, `mass` or `uniform`.
    experts: 0 = plain conv; n > 0 = CondConv with n experts.
    gate_pool: FTWT gate pooling, `avg` (official code) or `max` (paper).
    gate_softmax: softmax over pooled channels in the FTWT gate.
    gate_ste: pass the task-loss gradient through the FTWT binary mask to the
      gate's sigmoid (opt-in; the official code does not).
    mask_after_residual: FTWT mask (and target) after the residual add and
      activation instead of before the add (ResNet conv2; `gtafterblock`).
    fbs_ties: FBS winner rule. `exact_k` (default): exactly k winners, ties
      to the lower index, so zero-saliency channels can win and emit
      act(beta). `strict`: the official FBS code's rule, winners strictly
      above the (k+1)-th largest saliency (at most k; zero saliencies lose).
    fbs_predictor_act: FBS saliency predictor activation. `relu` (default,
      the FBS paper and code) or `layer` (the layer's own activation, e.g.
      swish, as the FBS-pruned CondConv paper writes it).
  """

  method: str = "dense"
  density: float = 1.0
  mass: float = 1.0
  mode: str = "decoupled"
  target: str = "mass"
  experts: int = 0
  gate_pool: str = "avg"
  gate_softmax: bool = True
  gate_ste: bool = False
  mask_after_residual: bool = False
  fbs_ties: str = "exact_k"
  fbs_predictor_act: str = "relu"

  def __post_init__(self):
    _check_choice("method", self.method, METHODS)
    _check_choice("mode", self.mode, FTWT_MODES)
    _check_choice("target", self.target, FTWT_TARGETS)
    _check_choice("gate_pool", self.gate_pool, GATE_POOLS)
    _check_choice("fbs_ties", self.fbs_ties, FBS_TIE_RULES)
    _check_choice("fbs_predictor_act", self.fbs_predictor_act, FBS_PREDICTOR_ACTS)
    if not (isinstance(self.density, (int, float)) and 0.0 < self.density <= 1.0):
      raise ValueError(f"dynamic.density (d) must be in (0, 1], got {self.density!r}")
    if not (isinstance(self.mass, (int, float)) and 0.0 < self.mass <= 1.0):
      raise ValueError(f"dynamic.mass (r) must be in (0, 1], got {self.mass!r}")
    if not (isinstance(self.experts, int) and self.experts >= 0):
      raise ValueError(f"dynamic.experts must be an integer >= 0, got {self.experts!r}")

  @classmethod
  def create(cls, spec: "Policy | Mapping[str, Any] | str | None" = None, **overrides) -> "Policy":
    """Build from a Policy, a dict / ConfigDict, a method name, or None (dense)."""
    if spec is None:
      fields = {}
    elif isinstance(spec, Policy):
      fields = dataclasses.asdict(spec)
    elif isinstance(spec, str):
      fields = {"method": spec}
    elif hasattr(spec, "to_dict"):
      fields = dict(spec.to_dict())
    elif isinstance(spec, Mapping):
      fields = dict(spec)
    else:
      raise TypeError(f"cannot build a gating policy from {type(spec).__name__}")
    fields.update(overrides)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"unknown dynamic policy field(s) {unknown}; allowed: {sorted(known)}")
    return cls(**fields)

  @property
  def gated(self) -> bool:
    """True when the layer produces a per-sample mask (FBS or FTWT)."""
    return self.method in ("fbs", "ftwt")

  def width(self, channels: int) -> int:
    """Channels actually built: ceil(d*C) for `static`, else C."""
    if self.method == "static":
      return num_winners(self.density, channels)
    return channels

  def replace(self, **changes) -> "Policy":
    return dataclasses.replace(self, **changes)


def _check_choice(name, value, allowed):
  if value not in allowed:
    raise ValueError(f"dynamic.{name} must be one of {list(allowed)}, got {value!r}")
