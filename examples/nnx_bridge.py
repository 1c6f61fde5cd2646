"""dynjax's Linen models inside Flax NNX, through `flax.nnx.bridge`.

dynjax is written in Flax Linen, but its models (and single `DynamicConv`
blocks) can be used from NNX code unchanged: `nnx.bridge.ToNNX` wraps a Linen
module into an NNX module whose parameters, batch statistics and recorded
gate decisions become NNX state. This script builds a quarter-width FBS
M-CifarNet, trains it for a few NNX steps on random data and reads the
per-example channel masks the gates recorded:

  python examples/nnx_bridge.py

Two things differ from a native NNX module:

- Collections the Linen code writes must be named at call time:
  `mutable=["batch_stats", "dynamic"]` in training (BN statistics and the
  gates' records), `mutable=["dynamic"]` in evaluation.
- The records of the `"dynamic"` collection (`mask`, `saliency`, ...) are NNX
  state of the wrapped module, under the Linen module path, e.g.
  `model.conv3["mask"]` after a call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import bridge

from dynjax import models
from dynjax.train import losses


def build(seed: int = 0, input_shape=(8, 8, 8, 3)) -> nnx.Module:
  """A quarter-width FBS M-CifarNet (d = 0.5) as an initialised NNX module."""
  linen_model = models.create("mcifarnet", num_classes=10, width_multiplier=0.25,
                              dynamic=dict(method="fbs", density=0.5))
  model = bridge.ToNNX(linen_model, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  bridge.lazy_init(model, jnp.zeros(input_shape), train=False)
  return model


def masks(model: nnx.Module) -> dict[str, jax.Array]:
  """The `[N, C]` channel masks recorded by the last call, per gated layer."""
  return {name: getattr(model, name)["mask"][...]
          for name in (f"conv{i}" for i in range(8))}


def train(steps: int = 3, seed: int = 0) -> tuple[list[float], nnx.Module]:
  """`steps` SGD steps with cross-entropy + the FBS lasso; returns the losses."""
  model = build(seed)
  optimizer = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=nnx.Param)
  images = jax.random.normal(jax.random.PRNGKey(seed), (8, 8, 8, 3))
  labels = jnp.arange(8) % 10

  @nnx.jit
  def step(model, optimizer, images, labels):
    def loss_fn(model):
      logits = model(images, train=True, mutable=["batch_stats", "dynamic"])
      saliency = [{"saliency": getattr(model, f"conv{i}")["saliency"][...]}
                  for i in range(8)]
      lasso = losses.fbs_lasso([("", s) for s in saliency], 1e-4)
      return losses.cross_entropy(logits, labels) + lasso
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  history = [float(step(model, optimizer, images, labels)) for _ in range(steps)]
  return history, model


def main():
  history, model = train()
  print("losses:", " ".join(f"{l:.4f}" for l in history))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  logits = model(x, train=False, mutable=["dynamic"])
  print("logits", logits.shape)
  for name, mask in masks(model).items():
    print(f"{name}: {int(mask.sum(-1)[0])} of {mask.shape[-1]} channels active")


if __name__ == "__main__":
  main()
