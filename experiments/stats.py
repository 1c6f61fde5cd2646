"""Small-sample statistics for the multi-seed study: means, 95% intervals, verdicts.

With three seeds a normal interval would be far too narrow, so every interval
here is Student-t: `mean +- t(0.975, n-1) * s / sqrt(n)`. A difference of two
rows uses Welch's interval (unequal variances, Welch-Satterthwaite degrees of
freedom); rows are not paired by seed, because a seed means different
initial weights in different networks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from scipy import stats as scipy_stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean with its 95% confidence interval (`half` = half-width).

  `half` is NaN with fewer than two values (no interval can be given).
  """

  mean: float
  half: float
  n: int

  @property
  def low(self) -> float:
    return self.mean - self.half

  @property
  def high(self) -> float:
    return self.mean + self.half

  def text(self, spec: str = ".2f") -> str:
    """`"61.23 ± 1.05"` (or just the mean when there is no interval)."""
    if self.n == 0:
      return "–"
    if math.isnan(self.half):
      return f"{self.mean:{spec}}"
    return f"{self.mean:{spec}} ± {self.half:{spec}}"


def estimate(values: Sequence[float]) -> Estimate:
  """Mean and Student-t 95% interval of `values`."""
  values = [float(v) for v in values]
  n = len(values)
  if n == 0:
    return Estimate(math.nan, math.nan, 0)
  mean = sum(values) / n
  if n == 1:
    return Estimate(mean, math.nan, 1)
  var = sum((v - mean) ** 2 for v in values) / (n - 1)
  t = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)
  return Estimate(mean, t * math.sqrt(var / n), n)


def difference(a: Sequence[float], b: Sequence[float]) -> Estimate:
  """`mean(a) - mean(b)` with Welch's 95% interval (n = min of the two sizes)."""
  a, b = [float(v) for v in a], [float(v) for v in b]
  if not a or not b:
    return Estimate(math.nan, math.nan, 0)
  ea, eb = estimate(a), estimate(b)
  mean = ea.mean - eb.mean
  if len(a) < 2 or len(b) < 2:
    return Estimate(mean, math.nan, min(len(a), len(b)))
  va = sum((v - ea.mean) ** 2 for v in a) / (len(a) - 1) / len(a)
  vb = sum((v - eb.mean) ** 2 for v in b) / (len(b) - 1) / len(b)
  se = math.sqrt(va + vb)
  if se == 0:
    return Estimate(mean, 0.0, min(len(a), len(b)))
  dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  t = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, dof)
  return Estimate(mean, t * se, min(len(a), len(b)))


def difference_of_differences(a: Sequence[float], b: Sequence[float], c: Sequence[float],
                              d: Sequence[float]) -> Estimate:
  """`(mean(a) - mean(b)) - (mean(c) - mean(d))` with a Welch-style interval.

  The variance is the sum of the four mean variances; the degrees of freedom
  come from the Welch-Satterthwaite formula over the four groups.
  """
  groups = [[float(v) for v in g] for g in (a, b, c, d)]
  if any(len(g) == 0 for g in groups):
    return Estimate(math.nan, math.nan, 0)
  means = [sum(g) / len(g) for g in groups]
  mean = (means[0] - means[1]) - (means[2] - means[3])
  n = min(len(g) for g in groups)
  if n < 2:
    return Estimate(mean, math.nan, n)
  parts = [sum((v - m) ** 2 for v in g) / (len(g) - 1) / len(g) for g, m in zip(groups, means)]
  total = sum(parts)
  if total == 0:
    return Estimate(mean, 0.0, n)
  dof = total ** 2 / sum(p ** 2 / (len(g) - 1) for p, g in zip(parts, groups))
  t = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, dof)
  return Estimate(mean, t * math.sqrt(total), n)


def verdict(diff: Estimate, min_n: int = 3) -> str:
  """`holds` when the interval of a "should be > 0" quantity lies above 0,
  `fails` when it lies below 0, else `inconclusive` (also with < `min_n` seeds)."""
  if diff.n < min_n or math.isnan(diff.half):
    return "inconclusive"
  if diff.low > 0:
    return "holds"
  if diff.high < 0:
    return "fails"
  return "inconclusive"
