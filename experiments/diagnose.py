r"""Per-layer gate statistics of trained runs, for diagnosing a contested claim.

  python -m experiments.diagnose cpu_fbs_condconv --workdir_root=results \
      --data=<npz> --only='fbs_condconv_d0.25_s0$'

For every selected finished run with a checkpoint, runs the test split through
the trained network (eval mode) and reports, per gated layer:

- `active`: mean fraction of active output channels per example;
- `union`: fraction of channels active for at least one test example, and
  `dead`: fraction never active;
- how much the decision depends on the input: `always`, the fraction of
  channels active for every example; `varies` = `union` - `always`, the
  fraction whose decision changes between examples; and `flip`, the mean
  (over examples and channels) disagreement of an example's mask with the
  channel's majority decision, min(p, 1 - p) for a channel on for a fraction
  p of the examples (0 for a mask that never changes, 0.5 at most);
- FBS: `zero_win`, the fraction of winners whose saliency is 0 (they emit
  act(beta) under the `exact_k` tie rule and 0 under `strict`), and the
  saliency's mean and standard deviation over (example, channel);
- FTWT: `mask_acc`, agreement of the gate's mask with its target, the
  target's own active fraction and `target_flip` (its `flip`: a gate that
  ignores the input can reach at most 1 - `target_flip` mask accuracy), and
  the gate logits' mean and std.

Writes `diagnosis.json` into each run's workdir and prints a markdown table.

`--probe` (FTWT runs on an in-memory dataset) asks whether a gate *could*
have been input-dependent: per gated layer it fits a linear classifier (least squares
to +-1 targets, one per output channel, decision = sign) from exactly the
features the gate head reads (its input pooled over space, softmaxed over
channels when the gate does) to the layer's targets, on the training images,
and scores it on the test images (`probe_acc`), beside the trained gate's `mask_acc` and the best fixed gate's
`1 - target_flip`. A probe well above the fixed gate while the gate sits at
it means the targets are predictable from the gate's input and the gate did
not learn to (an optimisation or budget limit, not the head's capacity).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from experiments import macs as macs_lib
from experiments import results as results_lib
from experiments import run as run_lib
from experiments import sweeps

DIAGNOSIS_FILE = "diagnosis.json"
PROBE_FILE = "probe.json"


def layer_statistics(dynamic_batches: Sequence[dict]) -> dict[str, dict[str, float]]:
  """Statistics per gated layer over a list of `"dynamic"` collections.

  Args:
    dynamic_batches: one `"dynamic"` collection per evaluated batch (padding
      examples already removed), as returned by `apply(..., mutable=["dynamic"])`.

  Returns:
    `{layer_path: {"active", "union", "dead", ...}}` (see the module docstring).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dynjax.train.losses import gated_layers  # pylint: disable=g-import-not-at-top

  merged: dict[str, dict[str, list]] = {}
  for dynamic in dynamic_batches:
    for path, entries in gated_layers(dynamic):
      layer = merged.setdefault(path, {})
      for key, value in entries.items():
        layer.setdefault(key, []).append(np.asarray(value, np.float32))
  out = {}
  for path, entries in merged.items():
    e = {k: np.concatenate(v, axis=0) for k, v in entries.items()}
    mask = e["mask"] > 0.5
    ever, always, freq = mask.any(axis=0), mask.all(axis=0), mask.mean(axis=0)
    row = {"active": float(mask.mean()), "union": float(ever.mean()),
           "dead": float(1.0 - ever.mean()), "always": float(always.mean()),
           "varies": float(ever.mean() - always.mean()),
           "flip": float(np.minimum(freq, 1.0 - freq).mean())}
    if "saliency" in e:
      g = e["saliency"]
      row["zero_win"] = float((mask & (g <= 0)).sum() / max(mask.sum(), 1))
      row["saliency_mean"], row["saliency_std"] = float(g.mean()), float(g.std())
    if "target" in e:
      target = e["target"] > 0.5
      row["mask_acc"] = float((mask == target).mean())
      row["target_active"] = float(target.mean())
      # The best input-independent gate (each channel always at its target's
      # majority) agrees with the target on 1 - target_flip of the decisions.
      target_freq = target.mean(axis=0)
      row["target_flip"] = float(np.minimum(target_freq, 1.0 - target_freq).mean())
    if "gate_logits" in e:
      row["logit_mean"] = float(e["gate_logits"].mean())
      row["logit_std"] = float(e["gate_logits"].std())
    out[path] = row
  return out


def diagnose(config, workdir: str, max_examples: int = 1024) -> dict[str, dict[str, float]]:
  """Runs the trained checkpoint of `workdir` over the test split."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dynjax.data import InputPipeline, create_source  # pylint: disable=g-import-not-at-top
  from dynjax.train import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  from dynjax.train.trainer import build_model  # pylint: disable=g-import-not-at-top

  model = build_model(config)
  variables = ckpt_lib.load_checkpoint_variables(workdir)
  source = create_source(config.dataset)
  pipeline = InputPipeline(source, config.dataset, config.batch_size, config.eval_batch_size,
                           config.seed, 1)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["dynamic"])[1].get(
      "dynamic", {}))
  collections, seen = [], 0
  for batch in pipeline.eval_batches():
    images = np.asarray(batch["image"])
    keep = np.asarray(batch["mask"]).astype(bool) if "mask" in batch else np.ones(len(images), bool)
    dynamic = apply(variables, images)
    collections.append(jax.tree.map(lambda a: np.asarray(a)[keep], dynamic))
    seen += int(keep.sum())
    if seen >= max_examples:
      break
  return layer_statistics(collections)


def _gate_features_and_targets(model, variables, images: "np.ndarray", batch: int = 256):
  """`{layer_path: (features [N, C_in], target [N, C_out], mask [N, C_out])}`:
  what each FTWT gate head reads (pooled input, softmaxed when the gate does)
  and the layer's recorded target and mask, over `images` (eval mode)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dynjax.layers.ftwt import FTWTGate, ftwt_features  # pylint: disable=g-import-not-at-top
  from dynjax.layers.gating import Pool, gated_layers  # pylint: disable=g-import-not-at-top

  def forward(v, x):
    seen = {}

    def capture(next_fun, args, kwargs, context):
      gate = context.module
      if isinstance(gate, FTWTGate) and context.method_name == "__call__":
        seen["/".join(gate.scope.path[:-1])] = ftwt_features(Pool(args[0]), gate.pool,
                                                             gate.softmax)[0]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
      dynamic = model.apply(v, x, train=False, mutable=["dynamic"])[1].get("dynamic", {})
    return {path: (seen[path], e["target"], e["mask"]) for path, e in gated_layers(dynamic)
            if path in seen and "target" in e}

  forward = jax.jit(forward)
  parts = [jax.tree.map(np.asarray, forward(variables, images[i:i + batch]))
           for i in range(0, len(images), batch)]
  return {path: tuple(np.concatenate([p[path][j] for p in parts]) for j in range(3))
          for path in parts[0]}


def probe(config, workdir: str) -> dict[str, dict[str, float]]:
  """Linear probes of each FTWT layer's targets from its gate's input
  (see the module docstring); needs an in-memory (`npz`/array) dataset."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dynjax.data import create_source  # pylint: disable=g-import-not-at-top
  from dynjax.train import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  from dynjax.train.trainer import build_model  # pylint: disable=g-import-not-at-top

  source = create_source(config.dataset)
  if source.arrays is None:
    raise ValueError("--probe needs an in-memory dataset (dataset.name='npz' or arrays); "
                     f"{source.name!r} streams from tfds")
  model = build_model(config)
  variables = ckpt_lib.load_checkpoint_variables(workdir)
  train = _gate_features_and_targets(model, variables, np.asarray(source.arrays["train"][0]))
  test = _gate_features_and_targets(model, variables, np.asarray(source.arrays["test"][0]))
  return probe_scores(train, test)


def probe_scores(train: dict, test: dict) -> dict[str, dict[str, float]]:
  """Fits the probes on `train` and scores them on `test` (both
  `{layer: (features, target, mask)}`): `probe_acc`, `fixed_acc` (each
  channel at its training majority) and the gate's `mask_acc`, on `test`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import Ridge  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  out = {}
  for path, (x_train, t_train, _) in train.items():
    x_test, t_test, m_test = test[path]
    scaler = StandardScaler().fit(x_train)
    t_train, t_test = t_train > 0.5, t_test > 0.5
    # One least-squares fit to +-1 targets for all channels at once, sign as the
    # decision: a linear classifier of the gate's own features, as a gate is.
    ridge = Ridge(alpha=1.0).fit(scaler.transform(x_train), np.where(t_train, 1.0, -1.0))
    predicted = ridge.predict(scaler.transform(x_test)) > 0
    majority = t_train.mean(axis=0) >= 0.5
    out[path] = {"probe_acc": float((predicted == t_test).mean()),
                 "fixed_acc": float((t_test == majority[None]).mean()),
                 "mask_acc": float(((m_test > 0.5) == t_test).mean())}
  return out


def markdown(name: str, layers: dict[str, dict[str, float]]) -> str:
  keys = sorted({k for row in layers.values() for k in row})
  lines = [f"**{name}**", "", "| layer | " + " | ".join(keys) + " |",
           "|---|" + "---:|" * len(keys)]
  for path, row in layers.items():
    lines.append(f"| {path} | " + " | ".join(
        f"{row[k]:.3f}" if k in row else "–" for k in keys) + " |")
  return "\n".join(lines)


SUMMARY_KEYS = ("active", "union", "always", "varies", "flip", "mask_acc", "target_flip")
PROBE_KEYS = ("mask_acc", "fixed_acc", "probe_acc")


def summary_table(rows: dict[str, list[dict[str, dict[str, float]]]],
                  keys: Sequence[str] = SUMMARY_KEYS) -> str:
  """One line per study row: each of `keys` averaged over the row's
  gated layers, then mean ± 95% interval over its seeds.

  Args:
    rows: `{row label: [layer statistics of one seed, ...]}`.
  """
  from experiments import stats  # pylint: disable=g-import-not-at-top
  lines = ["| row | seeds | gated layers | " + " | ".join(keys) + " |",
           "|---|---:|---:|" + "---:|" * len(keys)]
  for label, seeds in rows.items():
    cells = []
    for key in keys:
      per_seed = [sum(layer[key] for layer in layers.values()) / len(layers) for layers in seeds
                  if all(key in layer for layer in layers.values())]
      cells.append(stats.estimate(per_seed).text(".3f"))
    lines.append(f"| {label} | {len(seeds)} | {len(seeds[0])} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("sweep", choices=sorted(sweeps.SWEEPS))
  parser.add_argument("--workdir_root", default="workdirs")
  parser.add_argument("--data", default=None, help="the --data the sweep was run with")
  parser.add_argument("--only", default=None, help="regular expression on job names")
  parser.add_argument("--probe", action="store_true",
                      help="FTWT runs: fit linear probes of the targets from the gates' inputs")
  parser.add_argument("--summary", default=None,
                      help="also write a per-row summary (layer means, 95%% CI over seeds) "
                           "as markdown to this file")
  args = parser.parse_args(argv)
  by_row: dict[str, list] = {}
  for job in run_lib.select(sweeps.get_sweep(args.sweep), args.only):
    workdir = os.path.join(args.workdir_root, job.name)
    if results_lib.read_job(workdir).status != "done":
      continue
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
      print(f"[skip] {job.name}: no checkpoint", file=sys.stderr)
      continue
    config = macs_lib.load_config(job.config, job.arg,
                                  run_lib.job_overrides(job, args.workdir_root, args.data))
    layers = probe(config, workdir) if args.probe else diagnose(config, workdir)
    if not layers:
      print(f"[skip] {job.name}: no gated layers", file=sys.stderr)
      continue
    out_file = PROBE_FILE if args.probe else DIAGNOSIS_FILE
    with open(os.path.join(workdir, out_file), "w", encoding="utf-8") as f:
      json.dump(layers, f, indent=1)
    print(markdown(job.name, layers) + "\n")
    by_row.setdefault(job.label, []).append(layers)
  if args.summary and by_row:
    table = summary_table(by_row, PROBE_KEYS if args.probe else SUMMARY_KEYS)
    with open(args.summary, "w", encoding="utf-8") as f:
      f.write(table + "\n")
    print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
