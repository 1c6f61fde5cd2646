"""The multi-seed CPU study: rows over seeds, convergence, plots and tables.

A study sweep (`cpu_*` in `experiments.sweeps`) repeats every row over seeds;
the jobs of one row share `label` and `series`. This module groups finished
workdirs into rows, summarises each with a mean and a 95% interval
(`experiments.stats`), checks that every run converged (its last test
evaluations agree and it is well above chance), and draws the figures of
`docs/results.md`: accuracy vs MACs with error bars, training curves, and for
FTWT the pruning vs r and the gates' mask accuracy over steps.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from experiments import results as results_lib
from experiments import stats
from experiments import sweeps

# A run has converged when its last FLAT_EVALS test evaluations (the last
# fifth of a 15-epoch run) lie within FLAT_SPREAD points of each other, and it
# has learned when its final top-1 is LEARNED_ABOVE_CHANCE points above chance.
# (The recipes anneal the learning rate to 0, so a flat end alone does not
# show that the budget sufficed: the study also reruns rows at twice the
# epochs, `cpu_convergence`.)
FLAT_EVALS = 3
FLAT_SPREAD = 2.5
LEARNED_ABOVE_CHANCE = 15.0
CHANCE_TOP1 = 10.0
# The trainer's training-batch FTWT mask accuracy (fraction, per log step).
MASK_ACCURACY_KEY = "train_ftwt_mask_accuracy"
MASK_WEIGHT_KEY = "train_ftwt_mask_weight"


@dataclasses.dataclass
class Row:
  """One row of a study table: the same job over several seeds."""

  label: str
  series: str
  jobs: list[sweeps.Job]
  results: list[results_lib.JobResult]
  curves: list[list[tuple[int, float]]]
  workdirs: list[str] = dataclasses.field(default_factory=list)

  @property
  def done(self) -> list[int]:
    """Indices of the finished runs."""
    return [i for i, r in enumerate(self.results) if r.status == "done" and r.top1 is not None]

  def values(self, attribute: str) -> list[float]:
    """`attribute` of every finished run that has it."""
    out = []
    for i in self.done:
      value = getattr(self.results[i], attribute)
      if value is not None:
        out.append(value)
    return out

  def estimate(self, attribute: str) -> stats.Estimate:
    return stats.estimate(self.values(attribute))

  @property
  def paper(self):
    return self.jobs[0].paper

  def mask_curves(self) -> list[list[tuple[int, float]]]:
    """The training FTWT mask accuracy (%) over steps of every finished run."""
    return [[(s, 100 * v) for s, v in metric_curve(self.workdirs[i], MASK_ACCURACY_KEY)]
            for i in self.done]


def eval_curve(workdir: str) -> list[tuple[int, float]]:
  """`[(step, test top-1 %)]` of a workdir's evaluations."""
  return [(int(r["step"]), 100 * r["eval_top1"]) for r in results_lib.read_metrics(workdir)
          if "eval_top1" in r]


def metric_curve(workdir: str, key: str) -> list[tuple[int, float]]:
  """`[(step, value)]` of every record of `workdir/metrics.jsonl` holding `key`."""
  return [(int(r["step"]), float(r[key])) for r in results_lib.read_metrics(workdir) if key in r]


def mask_accuracy_rise(curve: Sequence[tuple[int, float]],
                       weights: Sequence[tuple[int, float]] | None = None) -> float | None:
  """Mask accuracy at the last logged step minus at the first, in points.

  The gate phase is the whole run: after the mask loss switches off the gates
  keep (almost) their weights, so the last value is the phase's outcome.
  """
  del weights
  if len(curve) < 2:
    return None
  return curve[-1][1] - curve[0][1]


def final_spread(curve: Sequence[tuple[int, float]]) -> float | None:
  """max - min of the last FLAT_EVALS test top-1 evaluations (points)."""
  if len(curve) < FLAT_EVALS:
    return None
  last = [top1 for _, top1 in curve[-FLAT_EVALS:]]
  return max(last) - min(last)


def converged(curve: Sequence[tuple[int, float]]) -> bool:
  """True when the run learned (well above chance) and its curve flattened."""
  spread = final_spread(curve)
  return (spread is not None and spread <= FLAT_SPREAD
          and curve[-1][1] >= CHANCE_TOP1 + LEARNED_ABOVE_CHANCE)


def aggregate(jobs: Sequence[sweeps.Job], workdir_root: str) -> list[Row]:
  """Groups a sweep's jobs by label (in order of first appearance)."""
  rows: dict[str, Row] = {}
  for job in jobs:
    workdir = os.path.join(workdir_root, job.name)
    row = rows.setdefault(job.label, Row(job.label, job.series, [], [], []))
    row.jobs.append(job)
    row.results.append(results_lib.read_job(workdir))
    row.curves.append(eval_curve(workdir))
    row.workdirs.append(workdir)
  return list(rows.values())


def by_label(rows: Sequence[Row]) -> dict[str, Row]:
  return {row.label: row for row in rows}


TABLE_HEADER = ("row", "seeds", "top-1 % (mean ± 95% CI)", "paper top-1", "MACs M, paper conv.",
                "reduction, paper conv.", "paper red.", "MACs M, exact", "reduction, exact",
                "active fraction", "converged")


def reference_row(rows: Sequence[Row], row: Row) -> Row | None:
  """The unpruned baseline `row` is compared with: the sweep's `dense` row
  (of the same recipe, e.g. `dense, 30 epochs`, where there is one), or the
  `<arch> baseline` row of the same architecture."""
  arch = row.label.split()[0]
  suffix = row.label[row.label.index(","):] if "," in row.label else ""
  by = by_label(rows)
  for label in (f"dense{suffix}", "dense", f"{arch} baseline"):
    if label in by:
      return by[label]
  return None


def is_static(row: Row) -> bool:
  """Whether `row` is a statically narrowed network (SCP, a static width)."""
  for job in row.jobs:
    if dict(job.overrides).get("dynamic.method") == "static":
      return True
    if job.arg.split(",")[0] in ("scp", "scp_condconv"):
      return True
  return False


def reduction_values(row: Row, exact: bool, reference: Row | None = None) -> list[float]:
  """Per-seed MAC reduction (%) of `row`.

  In the paper's convention the recount already compares with the unpruned
  model. The trainer's exact count compares a run with its own network
  without gates, which for a statically narrowed network (SCP, static width)
  is the narrow network itself; those rows are compared with the exact MACs
  of `reference` (the unpruned baseline) instead. (A static row's exact count
  can sit slightly below its own dense count, where ReLU leaves an input
  channel zero for an example, so static rows are recognised by their job.)
  """
  base = None
  if exact and reference is not None:
    counts = [reference.results[i].dense_macs for i in reference.done
              if reference.results[i].dense_macs]
    base = sum(counts) / len(counts) if counts else None
  out = []
  for i in row.done:
    r = row.results[i]
    if exact:
      if r.dynamic_macs is None or not r.dense_macs:
        continue
      denominator = base if (base and is_static(row)) else r.dense_macs
      out.append(100 * (1 - r.dynamic_macs / denominator))
    elif r.paper_macs is not None and r.paper_dense_macs:
      out.append(100 * (1 - r.paper_macs / r.paper_dense_macs))
  return out


def markdown_table(rows: Sequence[Row]) -> str:
  """One line per row: seeds finished, mean ± 95% CI of accuracy, MACs in both
  conventions, and how many of its runs converged."""
  lines = ["| " + " | ".join(TABLE_HEADER) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(TABLE_HEADER) - 1)) + "|"]
  for row in rows:
    done = row.done
    paper = row.paper
    ok = sum(converged(row.curves[i]) for i in done)
    cells = [
        row.label,
        f"{len(done)}/{len(row.jobs)}",
        row.estimate("top1").text(),
        "–" if paper is None or paper.top1 is None else f"{paper.top1:.2f}",
        row.estimate("paper_macs").text(".2f"),
        stats.estimate(reduction_values(row, exact=False)).text(".1f"),
        "–" if paper is None or paper.reduction is None else f"{paper.reduction:.1f}",
        row.estimate("dynamic_macs").text(".2f"),
        stats.estimate(reduction_values(row, exact=True,
                                        reference=reference_row(rows, row))).text(".1f"),
        row.estimate("active_fraction").text(".3f"),
        f"{ok}/{len(done)}",
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_accuracy_vs_macs(rows: Sequence[Row], path: str, title: str,
                          exact: bool = False) -> None:
  """Mean top-1 vs mean MACs per series, with 95% intervals on both axes."""
  plt = _pyplot()
  series = list(dict.fromkeys(row.series for row in rows))
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for i, name in enumerate(series):
    points = []
    for row in rows:
      if row.series != name or not row.done:
        continue
      macs = row.estimate("dynamic_macs" if exact else "paper_macs")
      if macs.n == 0:
        macs = row.estimate("dynamic_macs")
      top1 = row.estimate("top1")
      points.append((macs.mean, top1.mean, _zero_nan(macs.half), _zero_nan(top1.half)))
    if not points:
      continue
    points.sort()
    xs, ys, xerr, yerr = zip(*points)
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o-", capsize=3, color=plt.cm.tab10(i % 10),
                label=name)
  ax.set_xlabel("MACs per example (M, " + ("exact count)" if exact else "paper convention)"))
  ax.set_ylabel("test top-1 (%)")
  ax.set_title(f"{title} (mean ± 95% CI over seeds)")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  _save(fig, path)


def plot_curves(rows: Sequence[Row], path: str, title: str, columns: int = 4) -> None:
  """Test top-1 over training steps, one panel per row, one line per seed."""
  plt = _pyplot()
  rows = [row for row in rows if row.done]
  if not rows:
    return
  n_rows = (len(rows) + columns - 1) // columns
  fig, axes = plt.subplots(n_rows, columns, figsize=(3.2 * columns, 2.4 * n_rows),
                           squeeze=False, sharey=True)
  for ax, row in zip(axes.flat, rows):
    for i in row.done:
      curve = row.curves[i]
      if curve:
        steps, top1 = zip(*curve)
        ax.plot(steps, top1, "-", lw=1, label=f"seed {row.jobs[i].seed}")
    ax.set_title(row.label, fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(rows):]:
    ax.axis("off")
  axes[0][0].set_ylabel("test top-1 (%)")
  fig.suptitle(f"{title}: test top-1 during training", fontsize=10)
  _save(fig, path)


def _zero_nan(value: float) -> float:
  return 0.0 if value != value else value  # NaN -> no error bar


def _save(fig, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plt.close(fig)


def plot_family_extras(sweep: str, rows: Sequence[Row], out_dir: str) -> None:
  """FTWT sweeps: pruning vs r and the mask accuracy over steps."""
  if "ftwt" not in sweep:
    return
  plt = _pyplot()
  gated = [row for row in rows if " r=" in row.label and row.done]
  if not gated:
    return
  fig, ax = plt.subplots(figsize=(6.0, 4.0))
  for i, series in enumerate(dict.fromkeys(row.series for row in gated)):
    points = []
    for row in gated:
      if row.series == series:
        r = float(row.label.split(" r=")[1].split()[0])
        paper = reduction_values(row, exact=False)
        red = stats.estimate(paper if len(paper) == len(row.done)
                             else reduction_values(row, exact=True))
        points.append((r, red.mean, _zero_nan(red.half)))
    points.sort()
    xs, ys, err = zip(*points)
    ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, color=plt.cm.tab10(i % 10), label=series)
  ax.set_xlabel("target mass r")
  ax.set_ylabel("MAC reduction (%)")
  ax.set_title("FTWT: pruning vs r (mean ± 95% CI)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  _save(fig, os.path.join(out_dir, f"{sweep}_pruning_vs_r.png"))

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for i, row in enumerate(gated):
    for j, curve in enumerate(row.mask_curves()):
      if curve:
        steps, acc = zip(*curve)
        ax.plot(steps, acc, "-", lw=1, color=plt.cm.tab10(i % 10),
                label=row.label if j == 0 else None)
  ax.set_xlabel("training step of the FTWT stage")
  ax.set_ylabel("mask accuracy vs targets (%, training batches)")
  ax.set_title("FTWT gates: mask accuracy during the gate phase (one line per seed)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  _save(fig, os.path.join(out_dir, f"{sweep}_mask_accuracy.png"))
