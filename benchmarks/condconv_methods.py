"""Compare CondConv's exact batch lowerings against a plain convolution.

Usage:
  python benchmarks/condconv_methods.py --batch 32 64
  python benchmarks/condconv_methods.py --methods plain batched mixture im2col

Prints forward+backward time per call (ms, interleaved best-of-rounds, see
`timing.py`) of a plain convolution of the same shape and of each CondConv
lowering (`dynjax.layers.condconv`): `batched` (per-example kernels, one
grouped conv over the folded batch), `mixture` (n expert convs mixed by
alpha), `im2col` (patches once, per-example kernels, one batched matmul) and,
for depthwise shapes, `depthwise`.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import interleaved_best, table  # noqa: E402

from dynjax.layers import condconv as cc  # noqa: E402

SHAPES = {  # name: (H, C_in, C_out, stride, groups)
    "mcifarnet_conv1 30x30 64->64": (30, 64, 64, 1, 1),
    "mcifarnet_conv2 30x30 64->128 /2": (30, 64, 128, 2, 1),
    "mcifarnet_conv3 15x15 128->128": (15, 128, 128, 1, 1),
    "mcifarnet_conv6 8x8 192->192": (8, 192, 192, 1, 1),
    "resnet56_stage1 32x32 16->16": (32, 16, 16, 1, 1),
    "resnet56_stage3 8x8 64->64": (8, 64, 64, 1, 1),
    "resnet18@32_stage3 2x2 256->256": (2, 256, 256, 1, 1),
    "resnet18@32_stage4 1x1 512->512": (1, 512, 512, 1, 1),
    "depthwise 16x16 256": (16, 256, 256, 1, 256),
}
METHODS = ("plain", "batched", "mixture", "im2col", "depthwise")


def lowering(method, stride, groups):
  s = (stride, stride)
  if method == "plain":
    return lambda x, w, a: cc.conv_nhwc(x, w[0], s, "SAME", groups)
  if method == "depthwise":
    return lambda x, w, a: cc.condconv_depthwise(x, w, a, s, "SAME")
  fn = {"batched": cc.condconv_batched, "mixture": cc.condconv_mixture,
        "im2col": cc.condconv_im2col}[method]
  return lambda x, w, a: fn(x, w, a, s, "SAME", groups)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
  parser.add_argument("--experts", type=int, default=4)
  parser.add_argument("--methods", nargs="+", default=["plain", "mixture", "im2col", "depthwise"],
                      choices=METHODS)
  parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  key = jax.random.PRNGKey(0)
  print(f"backend={jax.default_backend()} experts={args.experts}", flush=True)
  for batch in args.batch:
    rows = []
    for name in args.shapes:
      h, cin, cout, stride, groups = SHAPES[name]
      x = jax.random.normal(key, (batch, h, h, cin))
      w = jax.random.normal(key, (args.experts, 3, 3, cin // groups, cout)) * 0.05
      alpha = jax.nn.sigmoid(jax.random.normal(key, (batch, args.experts)))
      fns = {}
      for method in args.methods:
        if method == "depthwise" and not groups == cin == cout:
          continue
        grad = jax.jit(jax.grad(
            lambda x, w, a, f=lowering(method, stride, groups): jnp.sum(f(x, w, a) ** 2),
            argnums=(0, 1, 2)))
        fns[method] = lambda g=grad, x=x, w=w, a=alpha: g(x, w, a)
      times = interleaved_best(fns, repeats=args.repeats, rounds=args.rounds)
      rows.append([name] + [times[m] * 1e3 if m in times else "-" for m in args.methods])
    print(f"\nbatch {batch}: forward+backward ms")
    print(table(["shape"] + list(args.methods), rows), flush=True)


if __name__ == "__main__":
  main()
