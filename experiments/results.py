"""Reading a finished (or running) job's results from its workdir.

The trainer appends one JSON object per write to `workdir/metrics.jsonl`
(`eval_top1`, `eval_dense_macs`, `eval_dynamic_macs`, ... at evaluation
steps); a `results.json` with the final metrics is used instead when present.
The sweep runner adds `run.json` (command, exit code, seconds) and the MAC
recount of `experiments.macs` adds `macs.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
RUN_RECORD = "run.json"
MACS_FILE = "macs.json"


@dataclasses.dataclass
class JobResult:
  """What a workdir says about one run (None where it says nothing).

  Attributes:
    status: `missing` (no workdir), `running` (metrics but no exit record),
      `done`, or `failed` (non-zero exit).
    step: last evaluated step.
    top1: final test top-1 accuracy in percent.
    best_top1: best test top-1 over all evaluations, in percent.
    dense_macs, dynamic_macs: per-example MACs recorded by the trainer
      (exact convention), in millions.
    paper_macs: per-example MACs in the paper's own convention, in millions
      (from `macs.json`), and `paper_dense_macs` its dense baseline.
    active_fraction: mean fraction of active channels over gated layers.
    seconds: wall time of the run (from `run.json`).
  """

  status: str = "missing"
  step: int | None = None
  top1: float | None = None
  best_top1: float | None = None
  dense_macs: float | None = None
  dynamic_macs: float | None = None
  paper_macs: float | None = None
  paper_dense_macs: float | None = None
  active_fraction: float | None = None
  seconds: float | None = None

  @property
  def reduction(self) -> float | None:
    """MAC reduction in percent, in the paper's convention when recounted."""
    if self.paper_macs is not None and self.paper_dense_macs:
      return 100 * (1 - self.paper_macs / self.paper_dense_macs)
    if self.dynamic_macs is not None and self.dense_macs:
      return 100 * (1 - self.dynamic_macs / self.dense_macs)
    return None


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir/metrics.jsonl` of the run that finished.

  A torn last line is ignored. A run that was interrupted and resumed (or,
  without a checkpoint, restarted) appends from its restored step, so a record
  whose step is below the previous one supersedes every earlier record from
  that step on: the curve is the one the final weights went through.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      step = record.get("step")
      if step is not None and records and records[-1].get("step") is not None \
          and step < records[-1]["step"]:
        records = [r for r in records if r.get("step") is None or r["step"] < step]
      records.append(record)
  return records


def read_job(workdir: str) -> JobResult:
  """Collects a `JobResult` from one workdir."""
  result = JobResult()
  if not os.path.isdir(workdir):
    return result
  records = read_metrics(workdir)
  evals = [r for r in records if "eval_top1" in r]
  if evals:
    result.step = int(evals[-1]["step"])
    result.top1 = 100 * evals[-1]["eval_top1"]
    result.best_top1 = 100 * max(r["eval_top1"] for r in evals)
  last = {}
  for record in records:  # latest value of every key
    last.update(record)
  final = _read_json(os.path.join(workdir, RESULTS_FILE))
  if final:
    last.update({f"eval_{k}": v for k, v in final.items()})
    if "top1" in final:
      result.top1 = 100 * final["top1"]
  if "eval_dense_macs" in last:
    result.dense_macs = last["eval_dense_macs"] / 1e6
    result.dynamic_macs = last["eval_dynamic_macs"] / 1e6
  if "eval_active_fraction" in last:
    result.active_fraction = last["eval_active_fraction"]
  macs = _read_json(os.path.join(workdir, MACS_FILE))
  if macs:
    result.paper_macs = macs["macs"] / 1e6
    result.paper_dense_macs = macs["dense_macs"] / 1e6
  run = _read_json(os.path.join(workdir, RUN_RECORD))
  if run is None:
    result.status = "running" if records else "missing"
  else:
    result.status = "done" if run.get("returncode") == 0 else "failed"
    result.seconds = run.get("seconds")
  return result
