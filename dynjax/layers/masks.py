"""Pure, batched mask functions: k-winners-take-all, FTWT targets, STE helpers.

Everything here is jit-able and vectorised over the batch; no Python loops over
samples or channels. Masks are float arrays of shape `[N, C]` holding 0 and 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# FTWT's numerical slack (docs/methods.md#heat-map-targets): delta = 1e-5.
FTWT_DELTA = 1e-5


def num_winners(density: float, channels: int) -> int:
  """k = ceil(d * C), the number of FBS winners (docs/methods.md#winners).

  A tiny tolerance keeps float noise such as 0.7 * 10 = 7.000000000000001
  from adding a channel.
  """
  if not 0.0 < density <= 1.0:
    raise ValueError(f"density d must be in (0, 1], got {density}")
  return max(1, min(channels, math.ceil(density * channels - 1e-9)))


def wta_mask(scores: jax.Array, k: int) -> jax.Array:
  """k-winners-take-all mask over the last axis.

  Args:
    scores: `[N, C]` (or `[..., C]`) scores; larger wins.
    k: static number of winners per row, `1 <= k <= C`.

  Returns:
    Array of the shape and dtype of `scores` (floating) with exactly `k` ones
    per row, at the `k` largest entries. Ties go to the lower channel index
    (`jax.lax.top_k` is stable). No gradient flows through the mask.
  """
  channels = scores.shape[-1]
  if not 1 <= k <= channels:
    raise ValueError(f"k must be in [1, {channels}], got {k}")
  dtype = scores.dtype if jnp.issubdtype(scores.dtype, jnp.floating) else jnp.float32
  scores = jax.lax.stop_gradient(scores)
  if k == channels:
    return jnp.ones(scores.shape, dtype)
  _, idx = jax.lax.top_k(scores, k)  # [..., k]
  flat_idx = idx.reshape(-1, k)
  rows = jnp.arange(flat_idx.shape[0])[:, None]
  mask = jnp.zeros((flat_idx.shape[0], channels), dtype).at[rows, flat_idx].set(1)
  return mask.reshape(scores.shape)


def strict_wta_mask(scores: jax.Array, k: int) -> jax.Array:
  """k-winners-take-all with the official FBS code's tie rule.

  A channel wins when its score is strictly above the (k+1)-th largest score
  of its row, so ties at the boundary give fewer than `k` winners, and when
  fewer than `k` scores are positive the zero-score channels lose (with
  `wta_mask` they would win and emit `act(beta)`). `k == C` keeps every
  channel, as the official code does at d = 1.

  Args:
    scores: `[..., C]` scores; larger wins.
    k: static number of winners per row, `1 <= k <= C`.

  Returns:
    `{0, 1}` array of the shape of `scores`, at most `k` ones per row, no
    gradient.
  """
  channels = scores.shape[-1]
  if not 1 <= k <= channels:
    raise ValueError(f"k must be in [1, {channels}], got {k}")
  dtype = scores.dtype if jnp.issubdtype(scores.dtype, jnp.floating) else jnp.float32
  scores = jax.lax.stop_gradient(scores)
  if k == channels:
    return jnp.ones(scores.shape, dtype)
  threshold = jax.lax.top_k(scores, k + 1)[0][..., k:]
  return (scores > threshold).astype(dtype)


FBS_TIE_RULES = ("exact_k", "strict")


def fbs_mask(scores: jax.Array, k: int, ties: str = "exact_k") -> jax.Array:
  """The FBS winner mask under tie rule `ties` (`exact_k`: `wta_mask`,
  `strict`: `strict_wta_mask`)."""
  if ties == "exact_k":
    return wta_mask(scores, k)
  if ties == "strict":
    return strict_wta_mask(scores, k)
  raise ValueError(f"FBS tie rule must be one of {list(FBS_TIE_RULES)}, got {ties!r}")


def channel_peak(features: jax.Array) -> jax.Array:
  """FTWT criterion `a[n, c] = max_{h,w} |features[n, h, w, c]|` -> `[N, C]`."""
  if features.ndim == 2:
    return jnp.abs(features)
  return jnp.max(jnp.abs(features), axis=tuple(range(1, features.ndim - 1)))


def _unsort(sorted_values: jax.Array, order: jax.Array) -> jax.Array:
  """Inverse of `take_along_axis(x, order, -1)` for a permutation `order`."""
  inverse = jnp.argsort(order, axis=-1)
  return jnp.take_along_axis(sorted_values, inverse, axis=-1)


def ftwt_target_mask(features: jax.Array, r: float, mode: str = "mass") -> jax.Array:
  """FTWT self-supervised target mask (docs/methods.md#heat-map-targets), computed without gradient.

  Args:
    features: the layer's unmasked output `O`, `[N, H, W, C]` (or `[N, C]`).
    r: `mass` mode: fraction of the heat-map mass to keep. `uniform` mode: the
      fraction of channels to *prune* (the official semantics).
    mode: `"mass"` or `"uniform"`.

  Returns:
    float32 `{0, 1}` array `[N, C]`.

  Mass mode replicates the official code exactly: per sample the criterion is
  normalised to sum 1 and sorted descending; a channel is dropped when its
  cumulative mass exceeds `r` by more than 1e-5 (so the channel that crosses
  `r` is dropped). `r == 1` drops only channels whose normalised mass is
  <= 1e-5; `r < 0` keeps everything; an all-zero criterion gives NaN masses and
  therefore keeps everything; a top channel heavier than `r` drops everything.
  """
  a = jax.lax.stop_gradient(channel_peak(features)).astype(jnp.float32)
  if mode == "mass":
    if isinstance(r, (int, float)) and r < 0:
      return jnp.ones_like(a)
    total = jnp.sum(a, axis=-1, keepdims=True)
    normed = a / total  # NaN rows when total == 0, as in the official code.
    if isinstance(r, (int, float)) and r == 1:
      return jnp.where(normed <= FTWT_DELTA, 0.0, 1.0)
    order = jnp.argsort(-normed, axis=-1)
    cumulative = jnp.cumsum(jnp.take_along_axis(normed, order, axis=-1), axis=-1)
    keep_sorted = jnp.where(cumulative - r > FTWT_DELTA, 0.0, 1.0)
    keep = _unsort(keep_sorted, order)
    if not isinstance(r, (int, float)):  # traced r: keep the r == 1 branch.
      exact_one = jnp.where(normed <= FTWT_DELTA, 0.0, 1.0)
      keep = jnp.where(r == 1, exact_one, keep)
    return keep
  if mode == "uniform":
    channels = a.shape[-1]
    n_prune = int(r * channels)
    alive = a > FTWT_DELTA
    if n_prune > 0:
      ranks = jnp.argsort(jnp.argsort(a, axis=-1), axis=-1)  # 0 = weakest
      alive = alive & (ranks >= n_prune)
    return alive.astype(jnp.float32)
  raise ValueError(f"unknown FTWT target mode {mode!r}; allowed: 'mass', 'uniform'")


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
  """Forward value `hard`, gradient of `soft` (straight-through estimator)."""
  return soft + jax.lax.stop_gradient(hard - soft)


def binary_gate(logits: jax.Array, ste: bool = False) -> jax.Array:
  """FTWT binarisation `M = 1[sigmoid(P) > 0.5] = 1[P > 0]` (docs/methods.md#binarisation).

  With `ste=False` (the official behaviour) the mask carries no gradient. With
  `ste=True` the backward pass uses the gradient of `sigmoid(P)`.
  """
  hard = (logits > 0).astype(logits.dtype)
  if ste:
    return straight_through(hard, jax.nn.sigmoid(logits))
  return jax.lax.stop_gradient(hard)
