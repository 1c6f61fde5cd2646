"""Compare CondConv's two exact batch strategies against a plain convolution.

Usage: python benchmarks/condconv_methods.py [--batch 64] [--repeats 20]

Prints forward+backward time per call for `batched` (per-example kernels,
one grouped conv over the folded batch), `mixture` (n expert convs mixed by
alpha) and a plain convolution of the same shape, on the default backend.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from dynjax.layers import condconv as cc

SHAPES = {  # name: (H, C_in, C_out, stride, groups)
    "mcifarnet_conv3": (15, 128, 128, 1, 1),
    "mcifarnet_conv6": (8, 192, 192, 1, 1),
    "mcifarnet_conv1": (30, 64, 64, 1, 1),
    "depthwise_256": (16, 256, 256, 1, 256),
}


def _time(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--experts", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  key = jax.random.PRNGKey(0)
  print(f"backend={jax.default_backend()} batch={args.batch} experts={args.experts}")
  print(f"{'shape':18s} {'plain ms':>11s} {'batched ms':>11s} {'mixture ms':>11s}"
        f" {'depthwise ms':>11s}", flush=True)
  for name, (h, cin, cout, stride, groups) in SHAPES.items():
    x = jax.random.normal(key, (args.batch, h, h, cin))
    w = jax.random.normal(key, (args.experts, 3, 3, cin // groups, cout)) * 0.05
    alpha = jax.nn.sigmoid(jax.random.normal(key, (args.batch, args.experts)))

    def loss(fn):
      return jax.jit(jax.grad(lambda x, w, a: jnp.sum(fn(x, w, a) ** 2), argnums=(0, 1, 2)))

    plain = loss(lambda x, w, a: cc.conv_nhwc(x, w[0], (stride, stride), "SAME", groups))
    batched = loss(lambda x, w, a: cc.condconv_batched(x, w, a, (stride, stride), "SAME", groups))
    mixture = loss(lambda x, w, a: cc.condconv_mixture(x, w, a, (stride, stride), "SAME", groups))
    fns = [plain, batched, mixture]
    if groups == cin == cout:
      fns.append(loss(lambda x, w, a: cc.condconv_depthwise(x, w, a, (stride, stride), "SAME")))
    times = [_time(f, x, w, alpha, repeats=args.repeats) * 1e3 for f in fns]
    print(f"{name:18s} " + " ".join(f"{t:11.2f}" for t in times), flush=True)


if __name__ == "__main__":
  main()
