"""The jitted train and eval steps (state replicated, batch on `data`).

One train step: apply (mutable batch_stats, dynamic) -> cross-entropy + FTWT
mask loss (weighted by the cooldown schedule) + FBS lasso + optional TF-style
L2 -> grads -> optimizer (per-group) -> new state (donated). Metrics stay on
device; the loop fetches them every `log_every_steps`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dynjax.layers.dynamic_conv import DYNAMIC
from dynjax.train import losses
from dynjax.train import sharding as sharding_lib
from dynjax.train.state import TrainState

# `optax.global_norm` is deprecated in favour of `optax.tree.norm` (newer optax).
_tree_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


def _apply(state: TrainState, params, images, train: bool, rng=None):
  variables = dict(state.variables(), params=params)
  mutable = ["batch_stats", DYNAMIC] if train else [DYNAMIC]
  rngs = {"dropout": rng} if rng is not None else None
  logits, updated = state.apply_fn(variables, images, train=train, mutable=mutable, rngs=rngs)
  return logits, updated


def train_loss(state: TrainState, params, batch: dict[str, jax.Array], config: Any,
               steps_per_epoch: int) -> tuple[jax.Array, tuple[dict, Any]]:
  """The total training loss and its parts for one batch.

  Returns:
    `(loss, (metrics, new_batch_stats))`; metrics are scalars.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  logits, updated = _apply(state, params, batch["image"], True, rng)
  layers = losses.gated_layers(updated.get(DYNAMIC))
  ce = losses.cross_entropy(logits, batch["label"], config.loss.label_smoothing)
  epoch = state.step // steps_per_epoch
  mask_weight = losses.ftwt_mask_weight(epoch, config.num_epochs, config.loss.ftwt_mask_weight,
                                        config.loss.ftwt_cooldown)
  mask_loss = losses.ftwt_mask_loss(layers)
  lasso = losses.fbs_lasso(layers, config.loss.fbs_lasso)
  opt = config.optimizer
  l2 = losses.l2_kernel_penalty(params, opt.weight_decay if opt.weight_decay_mode == "l2_loss" else 0.0)
  loss = ce + mask_weight * mask_loss + lasso + l2
  metrics = {
      "loss": loss, "cross_entropy": ce, "ftwt_mask_loss": mask_loss,
      "ftwt_mask_weight": mask_weight, "fbs_lasso": lasso, "l2": l2,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
  }
  if layers:
    metrics["active_fraction"] = jnp.mean(jnp.stack(list(losses.active_fractions(layers).values())))
  mask_accuracy = losses.ftwt_mask_accuracy(layers)
  if mask_accuracy is not None:
    metrics["ftwt_mask_accuracy"] = mask_accuracy
  return loss, (metrics, updated.get("batch_stats", state.batch_stats))


def train_step(state: TrainState, batch: dict[str, jax.Array], config: Any,
               steps_per_epoch: int) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step. Metrics include `nonfinite` (1 if the loss is not finite)."""
  grad_fn = jax.value_and_grad(train_loss, argnums=1, has_aux=True)
  (loss, (metrics, batch_stats)), grads = grad_fn(state, state.params, batch, config,
                                                  steps_per_epoch)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = _tree_norm(grads)
  metrics["nonfinite"] = 1.0 - jnp.isfinite(loss).astype(jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], config: Any) -> dict[str, jax.Array]:
  """Sums over the real (mask = 1) examples of one evaluation batch.

  Returns:
    `{"count", "loss", "top1", "top5", "ftwt_mask_accuracy"?, "active/<layer>"...}`
    summed over examples; divide by `count` after accumulating.
  """
  logits, updated = _apply(state, state.params, batch["image"], False)
  weights = batch["mask"]
  labels = batch["label"]
  per_example_ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  sums = {
      "count": jnp.sum(weights),
      "loss": jnp.sum(per_example_ce * weights),
      "top1": jnp.sum(losses.topk_correct(logits, labels, 1) * weights),
      "top5": jnp.sum(losses.topk_correct(logits, labels, 5) * weights),
  }
  layers = losses.gated_layers(updated.get(DYNAMIC))
  for path, value in losses.active_fractions(layers, weights).items():
    sums[f"active/{path}"] = value
  ftwt = [e for _, e in layers if "target" in e]
  if ftwt:
    per_example = sum(jnp.mean((e["mask"] == e["target"]).astype(jnp.float32), -1) for e in ftwt)
    sums["ftwt_mask_accuracy"] = jnp.sum(per_example / len(ftwt) * weights)
  return sums


def add_trees(a: Any, b: Any) -> Any:
  return jax.tree.map(jnp.add, a, b)


def compile_steps(config: Any, steps_per_epoch: int, mesh: jax.sharding.Mesh
                  ) -> tuple[Callable, Callable, Callable]:
  """Jitted `(train_step, eval_step, accumulate)` for a mesh.

  The state is replicated and donated; batches are sharded on `data`;
  metrics come back replicated.
  """
  state_sharding = sharding_lib.replicated(mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  jit_train = jax.jit(
      lambda s, b: train_step(s, b, config, steps_per_epoch),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, state_sharding), donate_argnums=0)
  jit_eval = jax.jit(lambda s, b: eval_step(s, b, config),
                     in_shardings=(state_sharding, batch_sharding),
                     out_shardings=state_sharding)
  accumulate = jax.jit(add_trees, donate_argnums=0)
  return jit_train, jit_eval, accumulate
