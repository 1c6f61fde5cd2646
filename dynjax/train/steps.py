"""The jitted train and eval steps (state replicated, batch on `data`).

One train step: apply (mutable batch_stats, dynamic) -> cross-entropy + the
gate's own loss (`Gate.loss`, weighted and scheduled by the gate) + optional
TF-style L2 -> grads -> optimizer (per-group) -> new state (donated). The
step takes an explicit `Objective` (loss weights and schedule), not the
experiment config. Metrics stay on device; the loop fetches them every
`log_every_steps`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from dynjax.layers.gating import DYNAMIC
from dynjax.layers.policy import Policy
from dynjax.train import losses
from dynjax.train import sharding as sharding_lib
from dynjax.train.state import TrainState

# `optax.global_norm` is deprecated in favour of `optax.tree.norm` (newer optax).
_tree_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the train step minimises, with every weight explicit.

  Attributes:
    policy: the model's gating `Policy` (its gate supplies the auxiliary loss).
    num_epochs: the run's length (gate loss schedules, e.g. FTWT's cooldown).
    label_smoothing: cross-entropy label smoothing.
    l2_weight_decay: strength of the TF-style `wd * sum(w^2) / 2` term (0: off).
    gate_weights: the gate's `loss_keys` values, as `(key, value)` pairs.
  """

  policy: Policy = Policy()
  num_epochs: int = 1
  label_smoothing: float = 0.0
  l2_weight_decay: float = 0.0
  gate_weights: tuple[tuple[str, float], ...] = ()

  @classmethod
  def create(cls, policy: Any = None, num_epochs: int = 1, label_smoothing: float = 0.0,
             l2_weight_decay: float = 0.0, **gate_weights: float) -> "Objective":
    """Gate weights not given take the gate's defaults (`Gate.loss_keys`)."""
    policy = Policy.create(policy)
    allowed = dict(policy.gate.loss_keys)
    unknown = sorted(set(gate_weights) - set(allowed))
    if unknown:
      raise ValueError(f"unknown loss weight(s) {unknown} for gate {policy.method!r}; "
                       f"allowed: {sorted(allowed)}")
    allowed.update(gate_weights)
    return cls(policy, int(num_epochs), float(label_smoothing), float(l2_weight_decay),
               tuple(sorted((k, float(v)) for k, v in allowed.items())))

  @classmethod
  def from_config(cls, config: Any) -> "Objective":
    """The objective of an experiment config (`config.loss`, `config.optimizer`)."""
    policy = Policy.create(config.dynamic)
    opt = config.optimizer
    return cls.create(
        policy, config.num_epochs, config.loss.label_smoothing,
        opt.weight_decay if opt.weight_decay_mode == "l2_loss" else 0.0,
        **{k: config.loss[k] for k in policy.gate.loss_keys})

  @property
  def weights(self) -> Mapping[str, float]:
    return dict(self.gate_weights)


def _apply(state: TrainState, params, images, train: bool, rng=None):
  variables = dict(state.variables(), params=params)
  mutable = ["batch_stats", DYNAMIC] if train else [DYNAMIC]
  rngs = {"dropout": rng} if rng is not None else None
  logits, updated = state.apply_fn(variables, images, train=train, mutable=mutable, rngs=rngs)
  return logits, updated


def train_loss(state: TrainState, params, batch: dict[str, jax.Array], objective: Objective,
               steps_per_epoch: int) -> tuple[jax.Array, tuple[dict, Any]]:
  """The total training loss and its parts for one batch.

  Returns:
    `(loss, (metrics, new_batch_stats))`; metrics are scalars.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  logits, updated = _apply(state, params, batch["image"], True, rng)
  layers = losses.gated_layers(updated.get(DYNAMIC))
  ce = losses.cross_entropy(logits, batch["label"], objective.label_smoothing)
  epoch = state.step // steps_per_epoch
  gate_loss, gate_metrics = objective.policy.gate.loss(
      layers, objective.weights, epoch, objective.num_epochs, objective.policy)
  l2 = losses.l2_kernel_penalty(params, objective.l2_weight_decay)
  loss = ce + gate_loss + l2
  metrics = {
      "loss": loss, "cross_entropy": ce, "l2": l2,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
      **gate_metrics,
  }
  if layers:
    metrics["active_fraction"] = jnp.mean(jnp.stack(list(losses.active_fractions(layers).values())))
  return loss, (metrics, updated.get("batch_stats", state.batch_stats))


def train_step(state: TrainState, batch: dict[str, jax.Array], objective: Objective,
               steps_per_epoch: int) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step. Metrics include `nonfinite` (1 if the loss is not finite)."""
  grad_fn = jax.value_and_grad(train_loss, argnums=1, has_aux=True)
  (loss, (metrics, batch_stats)), grads = grad_fn(state, state.params, batch, objective,
                                                  steps_per_epoch)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = _tree_norm(grads)
  metrics["nonfinite"] = 1.0 - jnp.isfinite(loss).astype(jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array],
              objective: Objective) -> dict[str, jax.Array]:
  """Sums over the real (mask = 1) examples of one evaluation batch.

  Returns:
    `{"count", "loss", "top1", "top5", "active/<layer>"..., gate sums...}`
    (e.g. FTWT's `ftwt_mask_accuracy`) summed over examples; divide by
    `count` after accumulating.
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
  sums.update(objective.policy.gate.eval_sums(layers, weights))
  return sums


def add_trees(a: Any, b: Any) -> Any:
  return jax.tree.map(jnp.add, a, b)


def compile_steps(config: Any, steps_per_epoch: int, mesh: jax.sharding.Mesh
                  ) -> tuple[Callable, Callable, Callable]:
  """Jitted `(train_step, eval_step, accumulate)` for a mesh.

  Args:
    config: an experiment config, or an `Objective`.
    steps_per_epoch: training steps per epoch.
    mesh: the device mesh.

  The state is replicated and donated; batches are sharded on `data`;
  metrics come back replicated.
  """
  objective = config if isinstance(config, Objective) else Objective.from_config(config)
  state_sharding = sharding_lib.replicated(mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  jit_train = jax.jit(
      lambda s, b: train_step(s, b, objective, steps_per_epoch),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, state_sharding), donate_argnums=0)
  jit_eval = jax.jit(lambda s, b: eval_step(s, b, objective),
                     in_shardings=(state_sharding, batch_sharding),
                     out_shardings=state_sharding)
  accumulate = jax.jit(add_trees, donate_argnums=0)
  return jit_train, jit_eval, accumulate
