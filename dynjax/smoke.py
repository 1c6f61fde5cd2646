"""Smoke run of the dynjax layers: `python -m dynjax.smoke`.

Builds one DynamicConv per policy on random data, runs a jitted training-mode
forward and backward pass, and prints the active-channel fraction each policy
produced. Takes a few seconds on a CPU.
"""

import time

import jax
import jax.numpy as jnp

from dynjax.layers import DynamicConv, Policy

POLICIES = {
    "dense": Policy("dense"),
    "static d=0.5": Policy("static", density=0.5),
    "fbs d=0.5": Policy("fbs", density=0.5),
    "fbs+condconv d=0.3": Policy("fbs", density=0.3, experts=4),
    "ftwt r=0.9": Policy("ftwt", mass=0.9),
}


def main():
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 16, 16, 32))
  print(f"jax {jax.__version__} on {jax.default_backend()}, input {x.shape}")
  for name, policy in POLICIES.items():
    start = time.perf_counter()
    layer = DynamicConv(64, policy=policy)
    variables = layer.init(jax.random.PRNGKey(1), x)

    @jax.jit
    def step(params, x):
      def loss(params):
        y, state = layer.apply({**variables, "params": params}, x, train=True,
                               mutable=["batch_stats", "dynamic"])
        return jnp.mean(y ** 2), (y, state)
      return jax.value_and_grad(loss, has_aux=True)(params)

    (value, (y, state)), grads = step(variables["params"], x)
    dyn = state.get("dynamic", {})
    active = float(dyn["mask"].mean()) if "mask" in dyn else 1.0
    gnorm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads))))
    print(f"{name:20s} out {tuple(y.shape)}  active channels {active:6.1%}  "
          f"loss {float(value):.4f}  |grad| {gnorm:.3f}  ({time.perf_counter() - start:.1f}s)")
  print("smoke run OK")


if __name__ == "__main__":
  main()
