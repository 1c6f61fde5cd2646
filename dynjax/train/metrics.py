"""Metric writing, progress reporting and the dense-vs-dynamic MAC summary.

Writers: clu's default writer (TensorBoard + log lines) when its TensorBoard
dependency is importable, else log lines; plus a `metrics.jsonl` file in the
workdir (one JSON object per write) that experiment scripts can read. Only
process 0 writes files.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Writes scalar dicts to log lines, `metrics.jsonl` and (if available) clu."""

  def __init__(self, workdir: str):
    self.is_primary = jax.process_index() == 0
    self._clu = None
    self._file = None
    if self.is_primary:
      os.makedirs(workdir, exist_ok=True)
      self._file = open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8")
      try:
        from dynjax.data import tf_setup  # pylint: disable=g-import-not-at-top
        tf_setup.tensorflow()  # clu's writer imports TensorFlow: keep it off accelerators
        from clu import metric_writers  # pylint: disable=g-import-not-at-top
        self._clu = metric_writers.create_default_writer(workdir, asynchronous=False)
      except ImportError:  # clu's TensorBoard writer needs the tensorboard package
        logging.info("TensorBoard is not installed: metrics go to log lines and %s",
                     METRICS_FILE)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.is_primary:
      return
    values = {k: float(v) for k, v in scalars.items()}
    if self._clu is not None:
      self._clu.write_scalars(step, values)
    else:
      logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in sorted(values.items())))
    self._file.write(json.dumps({"step": step, **values}) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self._clu is not None:
      self._clu.close()
    if self._file is not None:
      self._file.close()


class Progress:
  """Steps per second and ETA since the last report."""

  def __init__(self, total_steps: int, start_step: int):
    self.total_steps = total_steps
    self._last_step, self._last_time = start_step, time.perf_counter()

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
    return {"steps_per_sec": rate, "eta_seconds": eta}


def format_eta(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def summarize_eval(sums: Mapping[str, Any]) -> dict[str, float]:
  """Per-example means from `eval_step` sums (`active/<layer>` kept per layer,
  plus their mean as `active_fraction`)."""
  sums = {k: float(v) for k, v in jax.device_get(dict(sums)).items()}
  count = max(sums.pop("count"), 1.0)
  out = {k: v / count for k, v in sums.items()}
  out["eval_examples"] = count  # every example once, over all processes
  active = [v for k, v in out.items() if k.startswith("active/")]
  if active:
    out["active_fraction"] = float(np.mean(active))
  return out


def mac_summary(model: Any, variables: Any, images: np.ndarray) -> dict[str, float] | None:
  """Dense vs dynamic MACs per example, measured on `images` `[N, H, W, C]`
  with the FLOP counter (`dynjax.flops.count`, exact convention: every conv
  and dense layer, input and output channel sparsity from the masks).

  Returns None when the counter is not available.
  """
  try:
    from dynjax import flops  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if not hasattr(flops, "count"):
    return None
  report = flops.count(model.apply, variables, images, train=False)
  return {"dense_macs": float(report.dense_macs), "dynamic_macs": float(report.dynamic_macs),
          "mac_reduction": float(report.reduction)}
