"""Mask-aware MAC counting by interpreting jaxprs.

`count(fn, *args, **kwargs)` traces `fn` (e.g. a model's `apply`), counts the
multiply-accumulates of every convolution and dot_general per example, per
layer (Flax module path) and in total, both dense and on the given inputs
(skipping channels a sparse executor would skip), and returns a `Report`.
`report.under("fbs_condconv_paper", density=d)` / `report.under("ftwt_code")`
re-express the same call in the published conventions.
"""

from dynjax.flops.conventions import CONVENTIONS
from dynjax.flops.interpreter import Analysis, Counter, MacOp, analyse, count
from dynjax.flops.report import LayerRow, Report
from dynjax.flops.rules import RULES, Rule, register_rule


def count_dense(fn, *args, **kwargs) -> Report:
  """Dense MACs of `fn(*args, **kwargs)` from the trace alone (no execution).

  Arguments may be arrays or `jax.ShapeDtypeStruct`s.
  """
  return Counter(fn)(*args, measure=False, **kwargs)


__all__ = ["CONVENTIONS", "Analysis", "Counter", "LayerRow", "MacOp", "Report",
           "RULES", "Rule", "analyse", "count", "count_dense", "register_rule"]
