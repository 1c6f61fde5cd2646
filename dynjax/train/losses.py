"""Training losses and the per-layer statistics read from the `"dynamic"`
collection.

Gated layers record `mask [N, C]` and FTWT `gate_logits` / `target [N, C]` or
FBS `saliency [N, C]` (see `dynjax.layers.dynamic_conv`). `gated_layers` turns
the collection into one dict per layer, in the order the layers ran.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from dynjax.layers.gates import is_gate_param

# Leaf names of weight kernels (plain convs / dense layers, CondConv experts).
KERNEL_NAMES = ("kernel", "experts")
# Submodules whose kernels the TF-style L2 term skips: gates, routers, BN.
NO_L2_MODULES = ("router", "bn")


def gated_layers(dynamic: Mapping[str, Any] | None) -> list[tuple[str, dict[str, jax.Array]]]:
  """Groups a `"dynamic"` collection by layer.

  Args:
    dynamic: the collection returned by `apply(..., mutable=["dynamic"])`.

  Returns:
    `[(layer_path, {"mask": ..., ...}), ...]` in recording order; layer_path
    is the module path joined with "/". Only layers that recorded a `mask`.
  """
  if not dynamic:
    return []
  flat = traverse_util.flatten_dict(dict(dynamic))
  layers: dict[tuple, dict] = {}
  for path, value in flat.items():
    layers.setdefault(tuple(path[:-1]), {})[path[-1]] = value
  return [("/".join(map(str, path)), entries) for path, entries in layers.items()
          if "mask" in entries]


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


def ftwt_mask_loss(layers: list[tuple[str, dict]]) -> jax.Array:
  """FTWT gate loss exactly as the official code (docs/methods.md#mask-loss-and-cooldown).

  Per gated layer: BCE-with-logits(gate_logits, target), averaged over the
  batch and *summed* over channels; then averaged over the FTWT layers. 0
  when there are none.
  """
  per_layer = [
      optax.sigmoid_binary_cross_entropy(
          e["gate_logits"].astype(jnp.float32), e["target"].astype(jnp.float32)
      ).mean(axis=0).sum()
      for _, e in layers if "gate_logits" in e and "target" in e]
  if not per_layer:
    return jnp.zeros((), jnp.float32)
  return sum(per_layer) / len(per_layer)


def ftwt_mask_weight(epoch: jax.Array | int, num_epochs: int, weight: float,
                     cooldown: float) -> jax.Array:
  """`weight` until epoch `int(cooldown * num_epochs)`, 0 from then on
  (docs/methods.md#mask-loss-and-cooldown)."""
  return jnp.where(jnp.asarray(epoch) >= int(cooldown * num_epochs), 0.0, weight)


def fbs_lasso(layers: list[tuple[str, dict]], strength: float) -> jax.Array:
  """FBS lasso `lambda * sum_l E_x[||g_l(x)||_1]` on the pre-wta saliencies
  (docs/methods.md#lasso; g >= 0 after the predictor's ReLU)."""
  terms = [jnp.abs(e["saliency"].astype(jnp.float32)).sum(axis=-1).mean()
           for _, e in layers if "saliency" in e]
  if not terms or not strength:
    return jnp.zeros((), jnp.float32)
  return strength * sum(terms)


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def is_l2_kernel(path) -> bool:
  """True for weight kernels the TF-style L2 covers: conv / dense / expert
  kernels, not gate heads, CondConv routers or BN (docs/methods.md#weight-decay)."""
  names = _path_names(path)
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


def ftwt_mask_accuracy(layers: list[tuple[str, dict]]) -> jax.Array | None:
  """Mean over FTWT layers of the fraction of channels where mask == target."""
  accs = [jnp.mean((e["mask"] == e["target"]).astype(jnp.float32))
          for _, e in layers if "target" in e]
  return sum(accs) / len(accs) if accs else None


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
