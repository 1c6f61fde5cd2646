"""Cost of the mask-aware MAC counter relative to one jitted forward pass.

  python benchmarks/flops_cost.py [--model resnet18] [--batch 64] [--image-size 224]
      [--dynamic '{"method": "ftwt", "mass": 0.9}'] [--repeats 3]

Both are timed after their first (compiling) call; the counter's time covers
its whole call (jitted measurement + host-side summing). The target is a
ratio under 3x for ResNet-18 at batch 64.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp

from dynjax import flops, models


def best_time(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--num-classes", type=int, default=1000)
  parser.add_argument("--dynamic", default='{"method": "ftwt", "mass": 0.9}')
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  model = models.create(args.model, num_classes=args.num_classes,
                        dynamic=json.loads(args.dynamic))
  shape = (args.batch, args.image_size, args.image_size, 3)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros(shape))
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  counter = flops.Counter(model.apply)
  start = time.perf_counter()
  report = counter(variables, x, train=False)
  first = time.perf_counter() - start
  t_forward = best_time(lambda: forward(variables, x).block_until_ready(), args.repeats)
  t_count = best_time(lambda: counter(variables, x, train=False), args.repeats)
  print(f"{args.model} batch {args.batch} at {args.image_size}, dynamic={args.dynamic}, "
        f"backend {jax.default_backend()}")
  print(f"forward {1e3 * t_forward:.1f} ms, counter {1e3 * t_count:.1f} ms, "
        f"ratio {t_count / t_forward:.2f}x (first call incl. trace+compile {first:.1f} s)")
  print(f"dense {report.dense_macs / 1e6:.1f} M, dynamic {report.macs_mean / 1e6:.1f} M MACs "
        f"per example, reduction {100 * report.reduction:.1f}%")


if __name__ == "__main__":
  main()
