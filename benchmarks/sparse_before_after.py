"""Same-process A/B of two sparse executors against the dense model.

Usage (the "before" executor is an earlier commit's `dynjax/sparse`, copied
into an importable package whose `executor.py` imports its own
`active_conv`):

  mkdir -p /tmp/old/old_sparse && touch /tmp/old/old_sparse/__init__.py
  git show REF:dynjax/sparse/active_conv.py > /tmp/old/old_sparse/active_conv.py
  git show REF:dynjax/sparse/executor.py | sed 's/dynjax.sparse.active_conv/old_sparse.active_conv/' \
      > /tmp/old/old_sparse/executor.py
  PYTHONPATH=/tmp/old python benchmarks/sparse_before_after.py --batch 1 64

Dense, old and new executors are compiled first and timed in interleaved
rounds (best round kept), with the YNNPACK fusion flag off as in
`inference.py`.
"""

import argparse
import functools
import importlib
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_experimental_ynn_fusion_type=").strip()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from inference import TABLE1_DENSITIES, count_macs, random_variables  # noqa: E402
from timing import interleaved_best, table  # noqa: E402

from dynjax import models  # noqa: E402
from dynjax.sparse import SparseExecutor  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", default="mcifarnet")
  parser.add_argument("--old-package", default="old_sparse.executor")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
  parser.add_argument("--densities", type=float, nargs="+", default=list(TABLE1_DENSITIES))
  parser.add_argument("--repeats", type=int, default=40)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  old = importlib.import_module(args.old_package)
  key = jax.random.PRNGKey(0)
  for batch in args.batch:
    x = jax.random.normal(key, (batch, 32, 32, 3))
    dense = models.create(args.model, dynamic="dense")
    dense_vars = random_variables(dense, x, key)
    dense_fn = jax.jit(functools.partial(dense.apply, train=False))
    dense_macs = count_macs(jax.make_jaxpr(dense_fn)(dense_vars, x[:1]))
    fns, ideal = {"dense": lambda: dense_fn(dense_vars, x)}, {}
    for d in args.densities:
      model = models.create(args.model, dynamic=dict(method="fbs", density=d))
      variables = random_variables(model, x, key)
      new_ex, old_ex = SparseExecutor(model), old.SparseExecutor(model)
      err = float(jnp.max(jnp.abs(new_ex(variables, x) - old_ex(variables, x))))
      print(f"d={d}: max |new - old| = {err:.2e}", flush=True)
      ideal[d] = dense_macs / count_macs(jax.make_jaxpr(new_ex._fn)(variables, x[:1]))
      fns[f"old {d}"] = functools.partial(old_ex, variables, x)
      fns[f"new {d}"] = functools.partial(new_ex, variables, x)
    times = interleaved_best(fns, repeats=args.repeats if batch == 1 else max(1, args.repeats // 8),
                             rounds=args.rounds)
    t0 = times["dense"]
    rows = [[f"fbs d={d}", t0 * 1e3, times[f"old {d}"] * 1e3, times[f"new {d}"] * 1e3,
             t0 / times[f"old {d}"], t0 / times[f"new {d}"], ideal[d],
             t0 / times[f"new {d}"] / ideal[d]] for d in args.densities]
    print(f"\n{args.model} batch {batch} (ms; x = speed-up vs dense)")
    print(table(["config", "dense ms", "before ms", "after ms", "before x", "after x",
                 "ideal x", "after achieved"], rows), flush=True)


if __name__ == "__main__":
  main()
