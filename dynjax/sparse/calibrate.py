r"""Calibrate the sparse executor's cost model on this machine.

  python -m dynjax.sparse.calibrate                      # writes the packaged file
  python -m dynjax.sparse.calibrate --out my_costs.json  # then DYNJAX_COST_MODEL=my_costs.json
  python -m dynjax.sparse.calibrate --quick --out /tmp/c.json   # a smaller grid, ~15 s

Times, on JAX's default backend, convolutions over a grid of shapes (batch 1
to 64, 4x4 to 32x32 maps, 4 to 512 channels, 1x1 and 3x3 windows), kernel
and activation gathers, channel scatters, an elementwise epilogue and a
per-example `lax.map`, then fits `cost.CostModel`'s coefficients by
non-negative least squares on relative error and prints how well the fit
predicts each measurement. Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse

import numpy as np

from dynjax.sparse import cost
from dynjax.sparse.active_conv import scatter_channels


def _best_time(fn, *args) -> float:
  """Best-of-rounds seconds per call of a jitted `fn` (compiled first)."""
  return cost.best_seconds(fn, [args], min_seconds=0.02, rounds=3)


def _nnls_relative(a: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Non-negative `c` minimising the relative error `|(a @ c - t) / t|^2`."""
  from scipy.optimize import nnls  # pylint: disable=import-outside-toplevel
  w = 1.0 / t
  scale = np.maximum(np.abs(a * w[:, None]).max(axis=0), 1e-30)
  c, _ = nnls(a * w[:, None] / scale, np.ones_like(t))
  return c / scale


def conv_shapes(quick: bool, seed: int = 0):
  """`(n, hw, window, c_in, c_out)` shapes to time, capped in MACs."""
  rng = np.random.default_rng(seed)
  channels = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
  shapes = set()
  target = 30 if quick else 90
  while len(shapes) < target:
    n = int(rng.choice([1, 1, 8, 64]))
    hw = int(rng.choice([4, 8, 16, 32]))
    window = int(rng.choice([9, 9, 1]))
    c_in, c_out = (int(c) for c in rng.choice(channels, 2))
    macs = n * hw * hw * window * c_in * c_out
    if macs <= (2e8 if quick else 1.5e9):
      shapes.add((n, hw, window, c_in, c_out))
  return sorted(shapes)


def calibrate(quick: bool = False, verbose: bool = True) -> cost.CostModel:
  """Measures the primitives on the default backend and fits a `CostModel`."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  key = jax.random.PRNGKey(0)
  say = print if verbose else (lambda *a, **k: None)
  platform = jax.default_backend()
  dispatch = _best_time(jax.jit(lambda v: v + 1), jnp.zeros((4,)))
  say(f"platform {platform}; dispatch overhead {dispatch * 1e6:.1f} us (subtracted)")

  def timed(fn, *args):
    return max(_best_time(fn, *args) - dispatch, 1e-7)

  # Convolutions.
  conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  rows, times = [], []
  for n, hw, window, c_in, c_out in conv_shapes(quick):
    side = 3 if window == 9 else 1
    x = jax.random.normal(key, (n, hw, hw, c_in))
    k = jax.random.normal(key, (side, side, c_in, c_out))
    pix = n * hw * hw
    rows.append([1.0, pix * window * c_in * c_out, pix * window * c_in, pix * c_out])
    times.append(timed(conv, x, k))
  a, t = np.array(rows), np.array(times)
  conv_c = _nnls_relative(a, t)
  conv_err = np.abs(a @ conv_c / t - 1)
  say(f"conv: {len(t)} shapes, median |error| {np.median(conv_err):.0%}, "
      f"90th percentile {np.quantile(conv_err, 0.9):.0%}")

  # Gathers: kernel slices W[:, :, i, o] and activation channels x[..., idx].
  kernel_gather = jax.jit(lambda w, i, o: w[:, :, i[:, None], o[None, :]])
  act_gather = jax.jit(lambda x, i: jnp.take(x, i, axis=-1))
  rows, times = [], []
  for c, k in [(16, 8), (64, 32), (128, 64), (256, 128), (512, 256), (512, 64), (96, 48)]:
    w = jax.random.normal(key, (3, 3, c, c))
    idx = jnp.sort(jax.random.permutation(key, c)[:k]).astype(jnp.int32)
    rows.append([1.0, 9 * k * k])
    times.append(timed(kernel_gather, w, idx, idx))
  for n, hw, c, k in [(1, 32, 64, 32), (8, 16, 128, 64), (64, 8, 192, 96), (64, 32, 32, 16),
                      (1, 8, 512, 256)]:
    x = jax.random.normal(key, (n, hw, hw, c))
    idx = jnp.sort(jax.random.permutation(key, c)[:k]).astype(jnp.int32)
    rows.append([1.0, n * hw * hw * k])
    times.append(timed(act_gather, x, idx))
  gather_c = _nnls_relative(np.array(rows), np.array(times))

  # Scatters (per-example plan: `scatter_channels` with per-example indices) and
  # spreads (union plan: pad to C, then gather through the inverse permutation),
  # compact [N, H, W, k] -> [N, H, W, C].
  def spread(v, inverse, c):
    padded = jnp.concatenate([v, jnp.zeros(v.shape[:-1] + (c - v.shape[-1],), v.dtype)], -1)
    return jnp.take(padded, inverse, axis=-1)
  rows, scatter_times, spread_times = [], [], []
  for n, hw, c, k in [(1, 32, 64, 32), (8, 16, 128, 64), (64, 8, 192, 96), (64, 32, 32, 16),
                      (1, 8, 512, 256), (64, 16, 64, 48)]:
    v = jax.random.normal(key, (n, hw, hw, k))
    perm = jax.random.permutation(key, c).astype(jnp.int32)
    per_example = jnp.tile(perm[:k], (n, 1))
    rows.append([1.0, n * hw * hw * c])
    scatter_times.append(timed(jax.jit(scatter_channels, static_argnums=2), v, per_example, c))
    spread_times.append(timed(jax.jit(spread, static_argnums=2), v, perm, c))
  scatter_c = _nnls_relative(np.array(rows), np.array(scatter_times))
  spread_c = _nnls_relative(np.array(rows), np.array(spread_times))

  # Elementwise epilogue: y * a + b, activation.
  epilogue = jax.jit(lambda y, a, b: jax.nn.relu(y * a + b))
  rows, times = [], []
  for n, hw, c in [(1, 32, 64), (8, 16, 128), (64, 8, 192), (64, 32, 32), (64, 32, 128)]:
    y = jax.random.normal(key, (n, hw, hw, c))
    rows.append([3.0 * n * hw * hw * c])
    times.append(timed(epilogue, y, y[:1, :1, :1], y[:1, :1, :1]))
  elem_c = _nnls_relative(np.array(rows), np.array(times))

  # Per-example loop: lax.map of one-example convolutions, minus what the fitted
  # convolution model predicts for them, per example.
  conv_model = cost.CostModel(conv=tuple(float(c) for c in conv_c))
  looped = jax.jit(lambda x, k: jax.lax.map(lambda xs: conv(xs[None], k)[0], x))
  residuals = []
  for n, hw, c in [(8, 8, 32), (64, 8, 48), (64, 16, 32), (8, 32, 16), (64, 4, 96)]:
    x = jax.random.normal(key, (n, hw, hw, c))
    k = jax.random.normal(key, (3, 3, c, c))
    predicted = n * conv_model.conv_time(1, hw * hw, 9, c, c)
    residuals.append((timed(looped, x, k) - predicted) / n)
  loop = max(float(np.median(residuals)), 0.0)

  # Run-time choice among b plans, as the executor builds them: branch j picks
  # k_j channels, gathers input and kernel slice, convolves and scatters back;
  # a switch over b such branches against calling the widest one directly.
  xs = jax.random.normal(key, (1, 16, 16, 32))
  w = jax.random.normal(key, (3, 3, 32, 32))
  scores = jax.random.uniform(key, (32,))

  def branch(k, x, w, scores):
    idx = jnp.sort(jax.lax.top_k(scores, k)[1])
    z = conv(jnp.take(x, idx, axis=-1), w[:, :, idx[:, None], idx[None, :]])
    return jnp.zeros(x.shape, x.dtype).at[..., idx].set(z)

  base = timed(jax.jit(lambda x, w, s, i: branch(32, x, w, s)), xs, w, scores, jnp.asarray(0))
  rows, times = [], []
  for b in (2, 4, 8, 16):
    sizes = [max(1, 32 * (j + 1) // b) for j in range(b)]
    switched = jax.jit(lambda x, w, s, i, sizes=sizes: jax.lax.switch(
        i, [lambda x, w, s, k=k: branch(k, x, w, s) for k in sizes], x, w, s))
    rows.append([1.0, b])
    times.append(max(timed(switched, xs, w, scores, jnp.asarray(b - 1)) - base, 1e-7))
  switch_c = _nnls_relative(np.array(rows), np.array(times))

  model = cost.CostModel(
      platform=platform, conv=tuple(float(c) for c in conv_c),
      gather=tuple(float(c) for c in gather_c), scatter=tuple(float(c) for c in scatter_c),
      spread=tuple(float(c) for c in spread_c),
      elementwise=float(elem_c[0]), loop=float(loop),
      switch=tuple(float(c) for c in switch_c),
      notes=(f"calibrated by python -m dynjax.sparse.calibrate{' --quick' if quick else ''} "
             f"on {jax.devices()[0].device_kind} ({len(jax.devices())} devices), jax "
             f"{jax.__version__}; conv fit median error {np.median(conv_err):.0%}"))
  say(f"conv c0={conv_c[0] * 1e6:.1f} us, {1e12 * conv_c[1]:.3f} ps/MAC, "
      f"{1e12 * conv_c[2]:.2f} ps/input elem, {1e12 * conv_c[3]:.2f} ps/output elem")
  say(f"gather {gather_c[0] * 1e6:.1f} us + {gather_c[1] * 1e12:.1f} ps/elem; scatter "
      f"{scatter_c[0] * 1e6:.1f} us + {scatter_c[1] * 1e12:.1f} ps/elem; spread "
      f"{spread_c[0] * 1e6:.1f} us + {spread_c[1] * 1e12:.1f} ps/elem; elementwise "
      f"{elem_c[0] * 1e12:.1f} ps/elem; loop {loop * 1e6:.1f} us/example; switch "
      f"{switch_c[0] * 1e6:.1f} us + {switch_c[1] * 1e6:.1f} us/branch")
  return model


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=None,
                      help=f"calibration file to update (default: ${cost.ENV_VAR} if set, "
                           "else the file shipped with dynjax)")
  parser.add_argument("--quick", action="store_true", help="a smaller grid (less accurate)")
  args = parser.parse_args(argv)
  import os  # pylint: disable=import-outside-toplevel
  out = args.out or os.environ.get(cost.ENV_VAR) or cost.PACKAGED
  model = calibrate(quick=args.quick)
  cost.write_file(out, model)
  print(f"wrote the {model.platform!r} cost model to {out}")


if __name__ == "__main__":
  main()
