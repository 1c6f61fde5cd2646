"""The gating policy: one small config that every model takes.

See docs/architecture.md#the-gating-policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from dynjax.layers.gating import Gate, get_gate


@dataclasses.dataclass(frozen=True)
class Policy:
  """How a `DynamicConv` gates its output channels.

  Attributes:
    method: a registered gate (`dynjax.layers.list_gates()`): `dense`,
      `static`, `fbs`, `ftwt`, `bernoulli`, or one registered by the user.
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
    options: the method's own settings (`Gate.option_defaults`), as a dict
      (stored as sorted `(key, value)` pairs so the policy stays hashable).
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
  options: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    gate = get_gate(self.method)
    options = self.options
    if hasattr(options, "to_dict"):
      options = options.to_dict()
    if isinstance(options, Mapping):
      options = tuple(sorted(options.items()))
    object.__setattr__(self, "options", tuple(tuple(item) for item in options))
    unknown = sorted(set(dict(self.options)) - set(gate.option_defaults))
    if unknown:
      raise ValueError(f"unknown dynamic.options {unknown} for method {self.method!r}; "
                       f"allowed: {sorted(gate.option_defaults)}")
    if not (isinstance(self.density, (int, float)) and 0.0 < self.density <= 1.0):
      raise ValueError(f"dynamic.density (d) must be in (0, 1], got {self.density!r}")
    if not (isinstance(self.mass, (int, float)) and 0.0 < self.mass <= 1.0):
      raise ValueError(f"dynamic.mass (r) must be in (0, 1], got {self.mass!r}")
    if not (isinstance(self.experts, int) and self.experts >= 0):
      raise ValueError(f"dynamic.experts must be an integer >= 0, got {self.experts!r}")
    gate.check(self)

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
  def gate(self) -> Gate:
    """The registered gate of `method`."""
    return get_gate(self.method)

  @property
  def gated(self) -> bool:
    """True when the layer produces a per-sample mask (FBS, FTWT, ...)."""
    return self.gate.gated

  def width(self, channels: int) -> int:
    """Channels actually built: ceil(d*C) for `static`, else C."""
    return self.gate.width(self, channels)

  def option(self, name: str) -> Any:
    """`options[name]`, or the gate's default for it."""
    return dict(self.options).get(name, self.gate.option_defaults[name])

  def replace(self, **changes) -> "Policy":
    return dataclasses.replace(self, **changes)
