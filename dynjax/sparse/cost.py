"""The sparse executor's cost model: predicted seconds of each way to run a layer.

The executor can run a gated layer three ways (see `executor.py`): its full
convolution followed by the masks (`dense`), one plain convolution over the
channels active for any example of the batch (`union`), or one convolution
per example over that example's channels (`per_example`). Which is fastest
depends on the machine, the layer's shape, the batch size and how many
channels are active, so it is predicted from a few fitted primitives:

- convolution: `c0 + c_mac * MACs + c_in * N*H'*W'*kh*kw*C_in + c_out * N*H'*W'*C_out`
  (the two element terms are why small channel counts run at a lower rate);
- gather (kernel slices, activations): `g0 + g1 * elements`;
- scatter (per-example compact -> dense channels): `s0 + s1 * elements`;
- spread (union compact -> dense channels: pad, then gather): the same form;
- elementwise epilogue (BN fold, gate scale, activation): `e1 * elements`;
- per-example loop: `loop * N`;
- run-time choice among b compiled plans (`lax.switch`): `switch[0] + switch[1] * b`
  (on XLA CPU every branch adds a few microseconds per call, so plans that
  will rarely fit the batch are not worth compiling in).

The coefficients are measured and fitted by `python -m dynjax.sparse.calibrate`
(one command, about a minute), which writes them, per JAX platform, to the
JSON file the executor reads: `DYNJAX_COST_MODEL` if set, else the file
shipped with the package (`cost_model.json`, calibrated on a 2-core x86 CPU).
A platform with no calibration gets generic coefficients (MAC-proportional
convolutions, cheap gathers) and a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any, Sequence

PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cost_model.json")
ENV_VAR = "DYNJAX_COST_MODEL"
# A sparse plan is taken only when predicted to cost less than this fraction
# of the dense plan: the model's errors then rarely make a layer slower.
DEFAULT_MARGIN = 0.85


@dataclasses.dataclass(frozen=True)
class CostModel:
  """Fitted per-primitive costs (seconds) for one platform."""

  platform: str = "generic"
  conv: tuple[float, float, float, float] = (2e-5, 1e-11, 2e-11, 2e-11)
  gather: tuple[float, float] = (2e-6, 1e-10)
  scatter: tuple[float, float] = (2e-6, 1e-10)
  spread: tuple[float, float] = (2e-6, 1e-10)
  elementwise: float = 5e-11
  loop: float = 5e-5
  switch: tuple[float, float] = (5e-6, 3e-6)
  margin: float = DEFAULT_MARGIN
  notes: str = ""

  # -- primitives ------------------------------------------------------------
  def conv_time(self, n: int, hw_out: int, window: int, c_in: int, c_out: int) -> float:
    """One convolution: batch n, H'*W' outputs, kh*kw window, C_in -> C_out."""
    c0, c_mac, c_in_el, c_out_el = self.conv
    pix = n * hw_out
    return c0 + c_mac * pix * window * c_in * c_out + c_in_el * pix * window * c_in \
        + c_out_el * pix * c_out

  def gather_time(self, elements: float) -> float:
    return self.gather[0] + self.gather[1] * elements

  def scatter_time(self, elements: float) -> float:
    return self.scatter[0] + self.scatter[1] * elements

  def spread_time(self, elements: float) -> float:
    return self.spread[0] + self.spread[1] * elements

  def elementwise_time(self, elements: float) -> float:
    return self.elementwise * elements

  def switch_time(self, branches: int) -> float:
    """Choosing among `branches` compiled plans at run time (0 for one plan)."""
    return 0.0 if branches <= 1 else self.switch[0] + self.switch[1] * branches

  # -- plans (docs in executor.py) -------------------------------------------
  def dense(self, g: "Geometry") -> float:
    """Full convolution, then the folded BN/gate affine, activation and mask."""
    out = g.n * g.hw_out * g.c_out
    return self.conv_time(g.n, g.hw_out, g.window, g.c_in, g.c_out) + self.elementwise_time(3 * out)

  def union(self, g: "Geometry", k_in: int, k_out: int, gather_input: bool,
            spread_output: bool = True) -> float:
    """One convolution over the batch's union of active channels.

    `gather_input`: the input channels are gathered (else sliced or all);
    `spread_output`: the output goes back to the dense channel order (else it
    is padded union-first for the next layer).
    """
    t = self.gather_time(g.window * k_in * k_out)
    if gather_input and k_in < g.c_in:
      t += self.gather_time(g.n * g.hw_in * k_in)
    t += self.conv_time(g.n, g.hw_out, g.window, k_in, k_out)
    t += self.elementwise_time(3 * g.n * g.hw_out * k_out)
    if spread_output:
      return t + self.spread_time(g.n * g.hw_out * g.c_out)
    return t + self.elementwise_time(g.n * g.hw_out * g.c_out)

  def per_example(self, g: "Geometry", k_in: int, k_out: int, gather_input: bool) -> float:
    """One convolution per example over its own active channels."""
    t = g.n * (self.gather_time(g.window * k_in * k_out)
               + self.conv_time(1, g.hw_out, g.window, k_in, k_out))
    if g.n > 1:
      t += self.loop * g.n
    if gather_input and k_in < g.c_in:
      t += self.gather_time(g.n * g.hw_in * k_in)
    t += self.elementwise_time(3 * g.n * g.hw_out * k_out)
    return t + self.scatter_time(g.n * g.hw_out * g.c_out)

  # -- storage ---------------------------------------------------------------
  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "CostModel":
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
      raise ValueError(f"unknown cost model keys {sorted(unknown)}; expected {sorted(fields)}")
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class Geometry:
  """A layer's shape as the cost model sees it."""

  n: int
  hw_in: int
  hw_out: int
  window: int
  c_in: int
  c_out: int


def read_file(path: str) -> dict[str, CostModel]:
  """`{platform: CostModel}` from a calibration file (empty if it does not exist)."""
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    raw = json.load(f)
  return {platform: CostModel.from_json(d) for platform, d in raw.items()}


def write_file(path: str, model: CostModel) -> None:
  """Adds (or replaces) `model`'s platform in the calibration file at `path`."""
  models = read_file(path)
  models[model.platform] = model
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({p: m.to_json() for p, m in sorted(models.items())}, f, indent=1)
    f.write("\n")
  os.replace(tmp, path)


@functools.lru_cache(maxsize=None)
def _load(path: str, platform: str) -> CostModel:
  models = read_file(path)
  if platform in models:
    return models[platform]
  logging.warning("dynjax.sparse: no cost model for platform %r in %s; using generic "
                  "coefficients. Calibrate with: python -m dynjax.sparse.calibrate", platform,
                  path)
  return CostModel(platform=platform)


def round_seconds(fns: Sequence, args_list, reps: int, rounds: int) -> list[list[float]]:
  """Seconds per call of each of `fns`, one sample per round and function.

  Each round calls every function `reps` times in turn (cycling over
  `args_list`), so a slow spell of the machine hits all of them. The
  functions must be compiled already.
  """
  import jax  # pylint: disable=import-outside-toplevel
  per_round = [[] for _ in fns]
  for _ in range(rounds):
    for k, fn in enumerate(fns):
      start = time.perf_counter()
      for i in range(reps):
        out = fn(*args_list[i % len(args_list)])
      jax.block_until_ready(out)
      per_round[k].append((time.perf_counter() - start) / reps)
  return per_round


def interleaved_seconds(fns: Sequence, args_list, min_seconds: float = 0.05, rounds: int = 7,
                        statistic: str = "median") -> list[float]:
  """Seconds per call of each of `fns`, timed in interleaved rounds.

  Compiles each function, sizes the calls per round so that all of them
  together take `min_seconds` per function, then times `rounds` rounds
  (`round_seconds`). `statistic` is `"median"` over rounds (ignores a lucky
  or unlucky round; used to choose between programs whose times differ by a
  few percent) or `"min"` (best of rounds).
  """
  import jax  # pylint: disable=import-outside-toplevel
  for fn in fns:
    jax.block_until_ready(fn(*args_list[0]))
  reps = len(args_list)
  while True:
    seconds = reps * sum(t[0] for t in round_seconds(fns, args_list, reps, 1))
    if seconds >= min_seconds * len(fns) or reps >= 1024:
      break
    reps *= 2
  reduce = {"median": lambda t: sorted(t)[len(t) // 2], "min": min}[statistic]
  return [float(reduce(t)) for t in round_seconds(fns, args_list, reps, rounds)]


def best_seconds(fn, args_list, min_seconds: float = 0.05, rounds: int = 5) -> float:
  """Best-of-rounds seconds per call of `fn(*args)`, cycling over `args_list`."""
  return interleaved_seconds([fn], args_list, min_seconds, rounds, statistic="min")[0]


def default_cost_model(platform: str | None = None) -> CostModel:
  """The calibrated model for `platform` (default: JAX's default backend)."""
  if platform is None:
    import jax  # pylint: disable=import-outside-toplevel
    platform = jax.default_backend()
  return _load(os.environ.get(ENV_VAR) or PACKAGED, platform)
