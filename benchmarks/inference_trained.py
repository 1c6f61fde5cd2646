"""Sparse-executor latency on trained models, on real test images.

Usage:
  python benchmarks/inference_trained.py --data data/cifar10_subset.npz \\
      --runs results/fbs_run results/ftwt_run ... [--batch 1 8 64] [--rounds 3]

Each `--runs` entry is the workdir of a finished `python -m dynjax.main` run
holding `checkpoints/` and a `run.json` whose `command` is the training
command line (the study runner writes it); the model is rebuilt from that
command's `--config=` and `--config.*` overrides and restored from the
checkpoint. Batches are consecutive test images of `--data` (standardised as
in training), cycled so consecutive calls see different inputs.

Per run and batch size, against the dense network of the same architecture
(`dynamic="dense"`, eval mode, jitted, same process, interleaved rounds):

- `masked x`: the gated model's own eval forward (dense compute, then masks);
- `auto x`: `SparseExecutor(model)`: per layer, the plan the cost model picks;
- `union x` / `per-ex x`: every layer forced to that plan;
- `static x`: a statically pruned network (uniform width = the run's mean
  active fraction, no gates): the executor's bound if choosing cost nothing;
- `ideal x`: dense MACs / the MACs of the active channels (the FLOP
  counter's exact count on these images);
- `union`: the mean over gated layers of the batch's union of active output
  channels, as a fraction of the layer;
- `plans`: how many gated layers ran each plan (on the first batch).

The executors are profiled (`SparseExecutor.fit`) on 8 batches of training
images, then timed on test images.

`auto / masked` below 1 would mean the executor made a run slower than not
using it; the cost model is meant to prevent that.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shlex
import sys
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference import active_fraction  # noqa: E402
from timing import interleaved_best, table  # noqa: E402

from dynjax import config_loading, models  # noqa: E402
from dynjax.data import sources  # noqa: E402
from dynjax.sparse import SparseExecutor  # noqa: E402
from dynjax.train import checkpoints, metrics  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIP = ("init_from", "workdir", "dataset.path", "dataset.name")


def run_config(workdir: str):
  """The training config of a finished run, from its `run.json` command."""
  with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
    command = json.load(f)["command"]
  spec, overrides = None, []
  for token in shlex.split(command):
    if token.startswith("--config="):
      spec = token.split("=", 1)[1]
    elif token.startswith("--config."):
      key, _, value = token[len("--config."):].partition("=")
      if not key.startswith(_SKIP):
        overrides.append((key, value))
  if spec is None:
    raise ValueError(f"{workdir}/run.json: no --config= in {command!r}")
  path, _, arg = spec.partition(":")
  if not os.path.isabs(path):
    path = os.path.join(ROOT, path)
  return config_loading.load_config(path + (":" + arg if arg else ""), overrides)


def build(config, dynamic):
  kwargs = dict(config.get("model_kwargs") or {})
  return models.create(config.model, num_classes=config.num_classes, dynamic=dynamic, **kwargs)


def cycling(fn, variables, batches):
  """A zero-argument call that feeds the next batch each time."""
  it = itertools.cycle(batches)
  return lambda: fn(variables, next(it))


def bench_run(workdir, images, train_images, batch_sizes, rounds, repeats):
  config = run_config(workdir)
  dynamic = dict(config.dynamic)
  model = build(config, dynamic)
  variables = jax.device_put(checkpoints.load_checkpoint_variables(workdir))
  dense = build(config, "dense")
  key = jax.random.PRNGKey(0)
  dense_vars = jax.jit(functools.partial(dense.init, train=False))(key, images[:1])
  name = os.path.basename(os.path.normpath(workdir))
  fbs_like = dynamic.get("method") == "fbs"
  rows = []

  def train_batches(batch, count=8):
    count = max(1, min(count, len(train_images) // batch))
    return [jnp.asarray(train_images[i * batch:(i + 1) * batch]) for i in range(count)]

  for batch in batch_sizes:
    count = max(2, min(16 if batch == 1 else 4, len(images) // batch))
    batches = [jnp.asarray(images[i * batch:(i + 1) * batch]) for i in range(count)]
    frac = active_fraction(model, variables, jnp.concatenate(batches))
    static_density = float(dynamic.get("density", 1.0)) if fbs_like else round(frac, 2)
    static = build(config, dict(method="static", density=static_density))
    static_vars = jax.jit(functools.partial(static.init, train=False))(key, images[:1])
    masked_fn = jax.jit(functools.partial(model.apply, train=False))
    fns = {"dense": cycling(jax.jit(functools.partial(dense.apply, train=False)), dense_vars,
                            batches),
           "masked": cycling(masked_fn, variables, batches),
           "static": cycling(jax.jit(functools.partial(static.apply, train=False)),
                             static_vars, batches)}
    paths = ["auto", "union"] + (["per_example"] if fbs_like else [])
    if dynamic.get("experts"):
      paths.remove("union")
    # Profiled on training images, timed on test images.
    executors = {p: SparseExecutor(model, path=p).fit(variables, train_batches(batch))
                 for p in paths}
    err = 0.0
    for p, ex in executors.items():
      fns[p] = cycling(ex, variables, batches)
      for xb in batches[:4]:
        diff = jnp.abs(ex(variables, xb) - masked_fn(variables, xb))
        err = max(err, float(jnp.max(diff)))
    plans = executors["auto"].plans(variables, batches[0])
    union = float(np.mean([p["union_out"] / p["c_out"] for p in plans]))
    chosen = Counter(p["plan"][0] for p in plans)
    macs = metrics.mac_summary(model, variables, np.concatenate([np.asarray(b) for b in batches]))
    ideal = macs["dense_macs"] / macs["dynamic_macs"]
    times = interleaved_best(fns, repeats=repeats if batch == 1 else max(2, repeats // 8),
                             rounds=rounds)
    t_dense = times["dense"]
    speed = {k: t_dense / v for k, v in times.items()}
    rows.append([name, batch, f"{frac:.2f}", f"{union:.2f}", t_dense * 1e3, times["auto"] * 1e3,
                 speed["masked"], speed["auto"], speed.get("union", ""),
                 speed.get("per_example", ""), speed["static"], ideal,
                 speed["auto"] / ideal, speed["auto"] / speed["static"],
                 speed["auto"] / speed["masked"],
                 ", ".join(f"{k} {v}" for k, v in sorted(chosen.items())), f"{err:.1e}"])
    print(f"  {name} batch {batch}: auto {speed['auto']:.2f}x dense, masked "
          f"{speed['masked']:.2f}x, static {speed['static']:.2f}x, union {union:.2f}, "
          f"plans {dict(chosen)}, max|sparse-masked| {err:.1e}", flush=True)
  return rows


HEADER = ["run", "batch", "active", "union", "dense ms", "auto ms", "masked x", "auto x",
          "union x", "per-ex x", "static x", "ideal x", "auto/ideal", "auto/static",
          "auto/masked", "plans (auto)", "max err"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", nargs="+", required=True, help="workdirs of finished runs")
  parser.add_argument("--data", required=True, help=".npz with x_test (e.g. the CIFAR subset)")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=40)
  parser.add_argument("--ynn-fusion", default="off", choices=["off", "default"],
                      help="as benchmarks/inference.py")
  parser.add_argument("--out", default=None, help="also write the table (markdown) here")
  args = parser.parse_args(argv)
  if args.ynn_fusion == "off":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_experimental_ynn_fusion_type=").strip()
  if not os.path.exists(args.data):
    parser.error(f"--data {args.data!r} does not exist; expected an .npz with "
                 "x_train, y_train, x_test, y_test")
  source = sources.array_source("npz", *sources.npz_arrays(args.data))
  images, train_images = source.arrays["test"][0], source.arrays["train"][0]
  print(f"backend={jax.default_backend()} test images={len(images)}", flush=True)
  rows = []
  for workdir in args.runs:
    rows += bench_run(workdir, images, train_images, args.batch, args.rounds, args.repeats)
  text = table(HEADER, rows)
  print("\n" + text, flush=True)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
