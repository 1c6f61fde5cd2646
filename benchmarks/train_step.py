"""Training step time and images/s: dense vs FBS, FTWT and FBS + CondConv.

Usage:
  python benchmarks/train_step.py                                # M-CifarNet, ResNet-56, ResNet-18
  python benchmarks/train_step.py --models mcifarnet --batch 32 --input 32
  python benchmarks/train_step.py --models resnet18 --input 64 --width 0.5

One step is the library's own `dynjax.train.steps.train_step` (forward in
train mode with mutable batch_stats and dynamic, cross-entropy + the gate's
loss with its default weights, backward, optax SGD-momentum update, metrics),
jitted with the state donated, exactly as the trainer runs it on one device. All policies of one model are compiled first and timed in
interleaved rounds in the same process; each figure is also given as a
ratio to the dense step and to the same network without gates (`x ungated`:
FBS and FTWT against dense, FBS + CondConv against the ungated CondConv
network, so it is the gates' own overhead). Peak memory is XLA's compiled
estimate (arguments + outputs + temporaries). Model TFLOP/s counts 6 FLOPs
per dense MAC of the network (forward + backward, every channel, as the
masked layers compute them); with `--peak_tflops` also as a fraction of the
chip's peak (MFU).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import compiled_memory_mib, interleaved_best, table  # noqa: E402

from dynjax import flops, models  # noqa: E402
from dynjax.train import sharding, steps  # noqa: E402
from dynjax.train.state import create_train_state  # noqa: E402
from dynjax.train.steps import Objective  # noqa: E402

POLICIES = {
    "dense": "dense",
    "fbs": dict(method="fbs", density=0.5),
    "ftwt": dict(method="ftwt", mass=0.9),
    "condconv": dict(method="dense", experts=4),
    "fbs+condconv": dict(method="fbs", density=0.5, experts=4),
}
# The same network without gates: what a policy's gate overhead is measured
# against (CondConv changes the architecture; its own cost is not the gates').
UNGATED = {"fbs+condconv": "condconv"}


def bench_model(name, args):
  key = jax.random.PRNGKey(0)
  dtype = jnp.dtype(args.dtype)
  batch = {"image": jax.random.normal(key, (args.batch, args.input, args.input, 3), jnp.float32),
           "label": jnp.arange(args.batch, dtype=jnp.int32) % args.classes}
  tx = optax.sgd(0.01, momentum=0.9)
  mesh = sharding.create_mesh(jax.devices()[:1])
  runs, memory, flops_per_image = {}, {}, {}
  for pname in args.policies:
    model = models.create(name, num_classes=args.classes, dynamic=POLICIES[pname],
                          width_multiplier=args.width, dtype=dtype)
    state = [create_train_state(model, tx, key, (args.input, args.input, 3), mesh)]
    objective = Objective.create(POLICIES[pname])
    step = jax.jit(functools.partial(steps.train_step, objective=objective, steps_per_epoch=100),
                   donate_argnums=0)
    memory[pname] = compiled_memory_mib(step, state[0], batch)
    # Model FLOPs of one training image: 3 x the forward (forward + backward),
    # 2 FLOPs per MAC, at full width (masked layers compute every channel).
    forward = flops.count_dense(functools.partial(model.apply, train=False),
                                state[0].variables(), batch["image"][:1])
    flops_per_image[pname] = 6.0 * forward.dense_macs

    def call(step=step, state=state):
      state[0], metrics = step(state[0], batch)
      return metrics["loss"]

    runs[pname] = call
  times = interleaved_best(runs, repeats=args.repeats, rounds=args.rounds)
  base = times.get("dense")
  rows = []
  for pname, t in times.items():
    ungated = times.get(UNGATED.get(pname, "dense"))
    tflops = flops_per_image[pname] * args.batch / t / 1e12
    row = [pname, t * 1e3, args.batch / t, (t / base) if base else float("nan"),
           (t / ungated) if ungated else float("nan"), memory[pname] or float("nan"), tflops]
    if args.peak_tflops:
      row.append(f"{100 * tflops / args.peak_tflops:.1f}%")
    rows.append(row)
  print(f"\n{name}: batch {args.batch}, input {args.input}x{args.input}, width x{args.width}, "
        f"{args.dtype}")
  head = ["policy", "step ms", "img/s", "x dense", "x ungated", "peak MiB", "model TFLOP/s"]
  if args.peak_tflops:
    head.append("MFU")
  print(table(head, rows), flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", default=["mcifarnet", "resnet56", "resnet18"])
  parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--input", type=int, default=32)
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--peak_tflops", type=float, default=0.0,
                      help="the chip's peak (e.g. bf16 dense) for a model-FLOP-utilisation column")
  args = parser.parse_args(argv)
  print(f"backend={jax.default_backend()} devices={jax.devices()}", flush=True)
  for name in args.models:
    bench_model(name, args)


if __name__ == "__main__":
  main()
