"""The task loss, the TF-style L2 term and per-layer statistics of the
`"dynamic"` collection. The gates' own losses live beside the gates
(`dynjax.layers.fbs`, `.ftwt`, `.bernoulli`) and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from dynjax.layers.bernoulli import rate_loss
from dynjax.layers.fbs import fbs_lasso
from dynjax.layers.ftwt import ftwt_mask_accuracy, ftwt_mask_loss, ftwt_mask_weight
from dynjax.layers.gating import gated_layers, is_gate_param, path_names

__all__ = ["KERNEL_NAMES", "NO_L2_MODULES", "active_fractions", "cross_entropy",
           "fbs_lasso", "ftwt_mask_accuracy", "ftwt_mask_loss", "ftwt_mask_weight",
           "gated_layers", "is_l2_kernel", "l2_kernel_penalty", "rate_loss", "topk_correct"]

# Leaf names of weight kernels (plain convs / dense layers, CondConv experts).
KERNEL_NAMES = ("kernel", "experts")
# Submodules whose kernels the TF-style L2 term skips (besides gate heads): routers, BN.
NO_L2_MODULES = ("router", "bn")


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy; targets `(1 - s) * onehot + s / K`.

  Args:
    logits: `[N, K]`.
    labels: int `[N]`.
    label_smoothing: s in [0, 1).
  """
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def is_l2_kernel(path) -> bool:
  """True for weight kernels the TF-style L2 covers: conv / dense / expert
  kernels, not gate heads, CondConv routers or BN (docs/methods.md#weight-decay)."""
  names = path_names(path)
  return (names[-1] in KERNEL_NAMES and not is_gate_param(path)
          and not any(n in NO_L2_MODULES for n in names))


def l2_kernel_penalty(params: Any, weight_decay: float) -> jax.Array:
  """TF-style weight decay `wd * sum(w^2) / 2` over `is_l2_kernel` leaves."""
  if not weight_decay:
    return jnp.zeros((), jnp.float32)
  leaves = [jnp.sum(jnp.square(x.astype(jnp.float32)))
            for path, x in jax.tree_util.tree_leaves_with_path(params)
            if is_l2_kernel(path)]
  return weight_decay * 0.5 * sum(leaves) if leaves else jnp.zeros((), jnp.float32)


def active_fractions(layers: list[tuple[str, dict]],
                     weights: jax.Array | None = None) -> dict[str, jax.Array]:
  """Per-layer fraction of active channels, averaged over (weighted) samples.

  Returns `{layer_path: scalar}`; with `weights [N]` the sum over samples of
  `weights * mean_c mask` (so callers can accumulate and divide).
  """
  out = {}
  for path, e in layers:
    per_sample = jnp.mean(e["mask"].astype(jnp.float32), axis=-1)
    out[path] = per_sample.mean() if weights is None else jnp.sum(per_sample * weights)
  return out


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """`[N]` float 1 where the label is among the top-k logits."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
