"""Inference latency: dense vs masked-dense gated vs the sparse executor.

Usage:
  python benchmarks/inference.py                         # M-CifarNet, FBS at Table 1 densities
  python benchmarks/inference.py --batch 1 --densities 0.5 --methods fbs
  python benchmarks/inference.py --model resnet56 --methods fbs ftwt --densities 0.5

For every batch size, every figure is measured in the same process against
the dense model (`dynamic="dense"`, eval mode, jitted):

- `masked`: the gated model's own eval forward (dense compute, then masks);
- `sparse`: `dynjax.sparse.SparseExecutor`, computing only active channels;
- `static` (FBS without CondConv): the statically pruned network with the
  same convolution shapes (ceil(d*C) channels, no gates): what the executor
  would reach if selecting channels cost nothing;
- `ideal`: the MAC ratio dense / sparse, counted from the executed programs
  (convolutions and matmuls of the jaxprs, CondConv mixing included), and
  `achieved` = (measured sparse speed-up) / ideal.

FTWT masks come from the gates, so with random weights about half of the
channels are on; the mean active fraction is printed. Parameters are random
(speed does not depend on training) with non-trivial BN statistics.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import compiled_memory_mib, interleaved_best, table  # noqa: E402

from dynjax import models  # noqa: E402
from dynjax.sparse import SparseExecutor  # noqa: E402

TABLE1_DENSITIES = (0.9, 0.7, 0.5, 0.3, 0.25)


def count_macs(jaxpr) -> float:
  """Multiply-adds of convolutions and matmuls in a (closed) jaxpr.

  `lax.map`/`scan` bodies count once per iteration; for `cond`/`switch` the
  largest branch is counted (the FTWT executor's branches differ, so its
  figure is an upper bound; the FBS executor has none).
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out = eqn.outvars[0].aval.shape
      dn = eqn.params["dimension_numbers"]
      window = np.prod([rhs[i] for i in dn.rhs_spec[2:]])
      cin_per_group = rhs[dn.rhs_spec[1]]
      total += np.prod(out) * window * cin_per_group
    elif name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[i] for i in lhs_contract])
    elif name == "scan":
      total += eqn.params["length"] * count_macs(eqn.params["jaxpr"])
    elif name == "cond":
      total += max(count_macs(b) for b in eqn.params["branches"])
    else:
      for p in eqn.params.values():
        if hasattr(p, "jaxpr") or hasattr(p, "eqns"):
          total += count_macs(p)
  return float(total)


def random_variables(model, x, key):
  """Random init with BN statistics away from (0, 1) so folding is exercised.

  Running means move both ways, variances up; FBS's `beta` gets the official
  code's 0.1 so winners stay active through depth and the logits are not all
  zero (which would make the sparse-vs-masked check vacuous).
  """
  variables = model.init(key, x, train=False)
  k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
  paths, tree = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
  keys = jax.random.split(k1, len(paths))
  leaves = []
  for k, (path, leaf) in zip(keys, paths):
    noise = 0.1 * jax.random.normal(k, leaf.shape)
    leaves.append(leaf + (jnp.abs(noise) if "var" in jax.tree_util.keystr(path) else noise))
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.full_like(p, 0.1) if "beta" in jax.tree_util.keystr(path) else p,
      variables["params"])
  return {**variables, "params": params, "batch_stats": jax.tree.unflatten(tree, leaves)}


def policy_for(method: str, density: float, experts: int) -> dict:
  if method == "fbs":
    return dict(method="fbs", density=density, experts=experts)
  if method == "ftwt":
    return dict(method="ftwt", mass=0.9, experts=experts)
  raise ValueError(f"method must be 'fbs' or 'ftwt', got {method!r}")


def active_fraction(model, variables, x) -> float:
  """Mean fraction of active channels over gated layers and samples."""
  _, state = model.apply(variables, x, train=False, mutable=["dynamic"])
  fractions = [float(jnp.mean(m)) for path, m in
               jax.tree_util.tree_leaves_with_path(state["dynamic"])
               if "mask" in jax.tree_util.keystr(path)]
  return float(np.mean(fractions))


def run(args):
  key = jax.random.PRNGKey(0)
  dtype = jnp.dtype(args.dtype)
  kw = dict(num_classes=args.classes, width_multiplier=args.width, dtype=dtype)
  print(f"backend={jax.default_backend()} devices={jax.devices()} model={args.model} "
        f"input={args.input} width={args.width} dtype={args.dtype}", flush=True)
  for batch in args.batch:
    x = jax.random.normal(key, (batch, args.input, args.input, 3), dtype)
    dense = models.create(args.model, dynamic="dense", **kw)
    dense_vars = random_variables(dense, x, key)
    dense_fn = jax.jit(functools.partial(dense.apply, train=False))
    dense_macs = count_macs(jax.make_jaxpr(dense_fn)(dense_vars, x[:1]))
    fns = {"dense": lambda: dense_fn(dense_vars, x)}
    memory = {"dense": compiled_memory_mib(dense_fn, dense_vars, x)}
    info = {}
    configs = [(m, d) for m in args.methods for d in
               (args.densities if m.startswith("fbs") else (None,))]
    for method, d in configs:
      experts = args.experts if method == "fbs_cc" else 0
      base = "fbs" if method.startswith("fbs") else method
      model = models.create(args.model, dynamic=policy_for(base, d or 1.0, experts), **kw)
      variables = random_variables(model, x, key)
      masked_fn = jax.jit(functools.partial(model.apply, train=False))
      sparse = SparseExecutor(model).fit(variables, [x])
      name = f"{method} d={d}" if d is not None else method
      fns[f"{name} masked"] = functools.partial(masked_fn, variables, x)
      fns[f"{name} sparse"] = functools.partial(sparse, variables, x)
      if base == "fbs" and not experts:
        # The zero-overhead bound: a statically pruned network with the same
        # convolution shapes (ceil(d*C) channels everywhere, no gating).
        static = models.create(args.model, dynamic=dict(method="static", density=d), **kw)
        static_fn = jax.jit(functools.partial(static.apply, train=False))
        fns[f"{name} static"] = functools.partial(static_fn, random_variables(static, x, key), x)
      # Per image, traced at this batch size (the executor's choices depend on it).
      sparse_macs = count_macs(jax.make_jaxpr(sparse.function(batch))(variables, x)) / batch
      frac = active_fraction(model, variables, x) if base == "ftwt" else d
      memory[f"{name} sparse"] = compiled_memory_mib(sparse.function(batch), variables, x)
      info[name] = (dense_macs / sparse_macs, frac)
      out_sparse, out_masked = sparse(variables, x), masked_fn(variables, x)
      err = float(jnp.max(jnp.abs(out_sparse.astype(jnp.float32) - out_masked.astype(jnp.float32))))
      print(f"  {name}: max |sparse - masked| = {err:.2e}", flush=True)
    times = interleaved_best(fns, repeats=args.repeats if batch == 1 else max(1, args.repeats // 8),
                             rounds=args.rounds)
    t_dense = times["dense"]
    rows = [["dense", "1.0", f"{dense_macs / 1e6:.1f}", t_dense * 1e3, 1.0, "", "", 1.0, "", "",
             memory["dense"] or float("nan")]]
    for name, (ideal, frac) in info.items():
      t_masked, t_sparse = times[f"{name} masked"], times[f"{name} sparse"]
      speedup = t_dense / t_sparse
      t_static = times.get(f"{name} static")
      rows.append([name, f"{frac:.2f}", f"{dense_macs / ideal / 1e6:.1f}", t_sparse * 1e3,
                   speedup, t_dense / t_masked, t_dense / t_static if t_static else "",
                   ideal, speedup / ideal, batch / t_sparse,
                   memory[f"{name} sparse"] or float("nan")])
    print(f"\nbatch {batch}: latency of the sparse executor (ms), speed-ups vs dense")
    print(table(["config", "density", "MMACs/img", "sparse ms", "sparse x", "masked x",
                 "static x", "ideal x", "achieved", "img/s", "peak MiB"], rows), flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="mcifarnet")
  parser.add_argument("--input", type=int, default=32)
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
  parser.add_argument("--methods", nargs="+", default=["fbs"],
                      choices=["fbs", "fbs_cc", "ftwt"])
  parser.add_argument("--densities", type=float, nargs="+", default=list(TABLE1_DENSITIES))
  parser.add_argument("--experts", type=int, default=4)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=40)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--ynn-fusion", default="off", choices=["off", "default"],
                      help="off: stop XLA CPU from fusing a whole conv stack into one "
                           "YNNPACK graph, which made the dense baseline up to 2-3x "
                           "slower at batch 1 (docs/performance.md)")
  args = parser.parse_args(argv)
  if args.ynn_fusion == "off":  # read when the backend starts, i.e. on first use
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_experimental_ynn_fusion_type=").strip()
  run(args)


if __name__ == "__main__":
  main()
