"""Shared timing helpers for the benchmark scripts (not a test module).

Timings on a shared machine are noisy, so every configuration of a table is
compiled first, then all of them are timed in interleaved rounds and the
best round is reported: a slow spell on the machine then hits one round of
every configuration rather than one configuration.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax

from dynjax.sparse.cost import round_seconds


def interleaved_best(fns: dict[str, Callable[[], object]], repeats: int,
                     rounds: int) -> dict[str, float]:
  """Seconds per call of each zero-argument `fn`, best of `rounds` rounds.

  Each `fn` is called once to warm up (compile), then `repeats` times per
  round; the mean of a round is one sample.
  """
  for fn in fns.values():
    jax.block_until_ready(fn())
  per_round = round_seconds(list(fns.values()), [()], repeats, rounds)
  return {name: min(t) for name, t in zip(fns, per_round)}


def compiled_memory_mib(jitted, *args) -> float | None:
  """XLA's peak estimate for one call: arguments + outputs + temporaries (MiB).

  Returns None where the backend gives no memory analysis.
  """
  try:
    stats = jitted.lower(*args).compile().memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if stats is None:
    return None
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
           + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  return total / 2**20


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """A markdown table (floats with 3 significant digits)."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)
