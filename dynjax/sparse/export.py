"""A deployable sparse executor: `jax.export` for a fixed input shape.

For an edge deployment at batch 1 (or any fixed batch), the sparse executor
with the trained weights embedded is exported as one serialized StableHLO
program. Loading and running it needs `jax` only: no dynjax, Flax, model code
or checkpoint.

  from dynjax.sparse import export
  exported = export.export_executor(model, variables, (1, 32, 32, 3),
                                    sample_batches=[images[:1], images[1:2]])
  export.save(exported, "mcifarnet_fbs.jaxexport")

  # On the device, with only jax installed:
  from jax import export as jax_export
  with open("mcifarnet_fbs.jaxexport", "rb") as f:
    run = jax_export.deserialize(bytearray(f.read())).call
  logits = run(image)            # [1, 32, 32, 3] float32 -> [1, num_classes]

(`load` below does the same two lines.) The exported program keeps the
executor's plan choices, including the run-time choice among union sizes, so
it is exact for every input; `sample_batches` specialise those choices to
typical inputs (`SparseExecutor.fit`). `platforms` selects the targets
("cpu", "cuda", "tpu"); the plan choice uses the cost model of the platform
exporting, so export on (a machine like) the target.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from dynjax.sparse.executor import SparseExecutor


def export_executor(model, variables, input_shape: Sequence[int], *, dtype: Any = jnp.float32,
                    sample_batches: Sequence[jax.Array] = (),
                    platforms: Sequence[str] | None = None,
                    **executor_kwargs) -> jax.export.Exported:
  """The sparse executor of `model` with `variables` embedded, for one input shape.

  Args:
    model: a dynjax model.
    variables: its trained `{"params", "batch_stats"}` (become constants).
    input_shape: the fixed input shape, e.g. `(1, 32, 32, 3)`.
    dtype: the input dtype.
    sample_batches: typical inputs of that shape to specialise the plans on.
    platforms: export targets (default: the current backend).
    **executor_kwargs: `SparseExecutor` options (`bucket_fractions`, `path`,
      `cost_model`).

  Returns:
    A `jax.export.Exported`; `.serialize()` gives the bytes, `.call(x)` runs it.
  """
  input_shape = tuple(int(d) for d in input_shape)
  for x in sample_batches:
    if tuple(x.shape) != input_shape:
      raise ValueError(f"sample batch of shape {tuple(x.shape)}; expected {input_shape}")
  executor = SparseExecutor(model, auto_fit=False, **executor_kwargs)
  if sample_batches:
    executor.fit(variables, sample_batches)
  fn = executor.function(input_shape[0])
  variables = jax.tree.map(jnp.asarray, variables)
  run = jax.jit(lambda x: fn(variables, x))
  spec = jax.ShapeDtypeStruct(input_shape, jnp.dtype(dtype))
  kwargs = {} if platforms is None else {"platforms": tuple(platforms)}
  return jax.export.export(run, **kwargs)(spec)


def save(exported: jax.export.Exported, path: str) -> int:
  """Writes the serialized program; returns its size in bytes."""
  data = exported.serialize()
  with open(path, "wb") as f:
    f.write(data)
  return len(data)


def load(path: str) -> Callable[[jax.Array], jax.Array]:
  """The exported function, runnable with `jax` alone (no dynjax needed)."""
  with open(path, "rb") as f:
    return jax.export.deserialize(bytearray(f.read())).call
