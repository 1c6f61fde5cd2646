"""The train state: step, parameters, batch statistics, optimizer state and
the run's RNG key, created already replicated over the mesh."""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dynjax.train import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; all array fields are checkpointed.

  Attributes:
    step: int32 scalar, optimizer steps taken.
    params: the `params` collection.
    batch_stats: the `batch_stats` collection (empty dict if the model has none).
    opt_state: the optax state.
    rng: the run's base PRNG key (uint32 `[2]`); step `s` uses
      `fold_in(rng, s)`, so a resumed run draws the same dropout masks.
    apply_fn, tx: the model's `apply` and the optimizer (not checkpointed).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def variables(self) -> dict[str, Any]:
    """The model variables for `apply`."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def arrays(self) -> dict[str, Any]:
    """The checkpointed pytree."""
    return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "opt_state": self.opt_state, "rng": self.rng}

  def with_arrays(self, arrays: dict[str, Any]) -> "TrainState":
    return self.replace(**arrays)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       rng: jax.Array, input_shape: tuple[int, ...],
                       mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises the model and optimizer directly as replicated arrays.

  Args:
    model: a Flax module called as `model(x, train=...)`.
    tx: the optimizer.
    rng: PRNG key; split into the init key and the run's base key.
    input_shape: one example's shape `(H, W, C)`.
    mesh: the device mesh (state is replicated on it).
  """
  init_rng, params_rng, dropout_rng = jax.random.split(rng, 3)

  def init():
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, x, train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "batch_stats": batch_stats, "opt_state": tx.init(params), "rng": init_rng}

  arrays = jax.jit(init, out_shardings=sharding_lib.replicated(mesh))()
  return TrainState(apply_fn=model.apply, tx=tx, **arrays)
