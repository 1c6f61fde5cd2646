"""Convolutions that compute only the active channels of each sample.

A gated layer's output channels are known before its convolution runs (the
FBS predictor and the FTWT gate read the layer *input*), and its input is the
previous gated layer's output, zero outside that layer's active channels. So
a sample needs only the kernel slice `W[:, :, in_idx, out_idx]`:
`k_in * k_out` filters instead of `C_in * C_out`.

Activations between layers are kept *compact*: `[N, H, W, k]` plus the
channel indices `[N, k]` they stand for. Index sets have a static size `k`
(FBS: exactly ceil(d*C); FTWT: the active count rounded up to a bucket, the
padding slots holding inactive channels whose values are zero).

How a batch is run was chosen by measurement on XLA CPU (see
`docs/performance.md`): batch 1 is one plain convolution with the gathered
kernel; larger batches loop over samples with `lax.map`, one plain
convolution each, because per-example kernels as a batch-folded grouped
convolution or as im2col + batched matmul both ran slower than the dense
convolution they replace.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

Padding = str | Sequence[tuple[int, int]]


def bucket_sizes(channels: int, fractions: Sequence[float]) -> tuple[int, ...]:
  """Static widths an FTWT active set is rounded up to.

  Args:
    channels: C.
    fractions: bucket fractions in (0, 1]; C itself is always included.

  Returns:
    Sorted distinct sizes `ceil(f * C)` (each >= 1), ending with C.
  """
  for f in fractions:
    if not 0.0 < f <= 1.0:
      raise ValueError(f"bucket fractions must be in (0, 1], got {f!r}")
  sizes = {max(1, math.ceil(f * channels - 1e-9)) for f in fractions}
  sizes.add(channels)
  return tuple(sorted(sizes))


def active_indices(mask: jax.Array, k: int) -> jax.Array:
  """Indices of the active channels of each row, padded to `k` entries.

  Args:
    mask: `[N, C]` 0/1 mask (or scores: larger first).
    k: static number of indices, `1 <= k <= C`.

  Returns:
    int32 `[N, k]`, sorted ascending. With at most `k` ones in a row, every
    active channel is included and the rest of the row is filled with
    inactive channels.
  """
  _, idx = jax.lax.top_k(mask.astype(jnp.float32), k)
  return jnp.sort(idx.astype(jnp.int32), axis=-1)


def gather_channels(x: jax.Array, idx: jax.Array) -> jax.Array:
  """`x[n, ..., idx[n, j]]`: `[N, ..., C]`, `[N, k]` -> `[N, ..., k]`."""
  idx = idx.reshape(idx.shape[0], *([1] * (x.ndim - 2)), idx.shape[-1])
  return jnp.take_along_axis(x, idx, axis=-1)


def scatter_channels(compact: jax.Array, idx: jax.Array, channels: int,
                     fill: float = 0.0, sorted_indices: bool = True) -> jax.Array:
  """Inverse of `gather_channels`: `[N, ..., k]` -> `[N, ..., C]`.

  Channels not in `idx` hold `fill`. `idx` must not repeat within a row;
  pass `sorted_indices=False` unless each row of `idx` is ascending.
  """
  n = compact.shape[0]
  flat = compact.reshape(n, -1, compact.shape[-1])
  dense = jnp.full((n, flat.shape[1], channels), fill, compact.dtype)
  rows = jnp.arange(n)[:, None]
  dense = dense.at[rows, :, idx].set(jnp.swapaxes(flat, 1, 2), unique_indices=True,
                                     indices_are_sorted=sorted_indices)
  return dense.reshape(*compact.shape[:-1], channels)


def _slice_kernel(weights: jax.Array, in_idx: jax.Array, out_idx: jax.Array,
                  alpha: jax.Array | None) -> jax.Array:
  """One sample's kernel `[kh, kw, k_in, k_out]` from a kernel or experts."""
  if alpha is None:  # weights: [kh, kw, C_in, C_out]; one gather of the slice
    kernel = weights[:, :, in_idx[:, None], out_idx[None, :]]
  else:
    # CondConv experts [n, kh, kw, C_in, C_out]: slice, then mix the survivors
    # only (n * kh * kw * k_in * k_out MACs, docs/methods.md#fbs-pruned-condconv).
    sliced = jnp.take(jnp.take(weights, in_idx, axis=3), out_idx, axis=4)
    kernel = jnp.tensordot(alpha.astype(sliced.dtype), sliced, axes=1)
  return kernel


def _conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=strides, padding=padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def active_conv(x: jax.Array, weights: jax.Array, in_idx: jax.Array | None,
                out_idx: jax.Array, strides: Sequence[int], padding: Padding,
                alpha: jax.Array | None = None) -> jax.Array:
  """Convolve each sample with only its active input and output channels.

  Args:
    x: compact input `[N, H, W, k_in]`; channel j of sample n is input
      channel `in_idx[n, j]`.
    weights: kernel `[kh, kw, C_in, C_out]`, or CondConv experts
      `[n, kh, kw, C_in, C_out]` together with `alpha`.
    in_idx: int `[N, k_in]`, or None when `x` holds all C_in channels.
    out_idx: int `[N, k_out]` output channels to compute.
    strides: (sh, sw).
    padding: "SAME", "VALID" or explicit pairs (as the dense convolution).
    alpha: CondConv routing weights `[N, n]`, or None for a plain kernel.

  Returns:
    `[N, H', W', k_out]`: channel j of sample n is output channel
    `out_idx[n, j]` of the dense convolution.
  """
  c_in = weights.shape[-2]
  if in_idx is None:
    in_idx = jnp.broadcast_to(jnp.arange(c_in, dtype=jnp.int32), (x.shape[0], c_in))
  strides = tuple(strides)
  if x.shape[0] == 1:  # one plain convolution with the gathered kernel
    a = None if alpha is None else alpha[0]
    kernel = _slice_kernel(weights, in_idx[0], out_idx[0], a)
    return _conv(x, kernel, strides, padding)

  def one_sample(args):
    xs, i_in, i_out, a = args
    kernel = _slice_kernel(weights, i_in, i_out, a)
    return _conv(xs[None], kernel, strides, padding)[0]

  return jax.lax.map(one_sample, (x, in_idx, out_idx, alpha))
