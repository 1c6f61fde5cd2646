"""The NNX route of examples/nnx_bridge.py: a dynjax Linen model inside Flax NNX."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "nnx_bridge.py"
_spec = importlib.util.spec_from_file_location("nnx_bridge", _PATH)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

pytestmark = pytest.mark.usefixtures("fast_cpu_compiles")


def test_nnx_forward_equals_linen_apply_and_records_masks():
  model = example.build(seed=3)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
  logits = model(x, train=False, mutable=["dynamic"])
  variables = {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
               "batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}
  expected, records = model.to_nnx__module.apply(variables, x, train=False, mutable=["dynamic"])
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-6, atol=1e-6)
  masks = example.masks(model)
  assert list(masks) == [f"conv{i}" for i in range(8)]
  for name, mask in masks.items():
    channels = mask.shape[-1]
    # FBS at d = 0.5: exactly ceil(d * C) winners per example.
    np.testing.assert_array_equal(np.asarray(mask).sum(-1), [math.ceil(0.5 * channels)] * 2)
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(records["dynamic"][name]["mask"]))


def test_nnx_training_updates_params_and_batch_stats():
  before = example.build(seed=0)
  history, after = example.train(steps=1, seed=0)
  assert len(history) == 1 and all(np.isfinite(history))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         nnx.to_pure_dict(nnx.state(before, nnx.Param)),
                         nnx.to_pure_dict(nnx.state(after, nnx.Param)))
  assert all(jax.tree.leaves(changed))
  mean0 = nnx.to_pure_dict(nnx.state(before, nnx.BatchStat))["conv0"]["bn"]["mean"]
  mean1 = nnx.to_pure_dict(nnx.state(after, nnx.BatchStat))["conv0"]["bn"]["mean"]
  assert not np.allclose(np.asarray(mean0), np.asarray(mean1))
