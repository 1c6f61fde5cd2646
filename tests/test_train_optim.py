"""Optimizers: gate/backbone partition, PyTorch-coupled decay, TF RMSProp, schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from dynjax.train import optim


def _config(**changes):
  config = default.get_config()
  config.num_epochs = 10
  for key, value in changes.items():
    setattr(config, key, value)
  return config


PARAMS = {"conv0": {"conv": {"kernel": jnp.array([1.0, -2.0])},
                    "gate": {"fc": {"kernel": jnp.array([0.5]), "bias": jnp.array([1.0])}}},
          "conv1": {"predictor": {"fc": {"kernel": jnp.array([2.0])}}},
          "logits": {"kernel": jnp.array([3.0])}}
GRADS = jax.tree.map(lambda p: jnp.full_like(p, 0.5), PARAMS)


def test_param_labels_split_gates_from_backbone():
  labels = optim.param_labels(PARAMS)
  assert labels["conv0"]["conv"]["kernel"] == "backbone"
  assert labels["conv0"]["gate"]["fc"]["kernel"] == "gate"
  assert labels["conv0"]["gate"]["fc"]["bias"] == "gate"
  assert labels["conv1"]["predictor"]["fc"]["kernel"] == "gate"
  assert labels["logits"]["kernel"] == "backbone"


def test_gate_params_get_the_gate_optimizer():
  # Backbone: SGD lr 0 (frozen); gates: plain SGD lr 0.1 (FTWT mask optimizer).
  config = _config(
      optimizer=default.optimizer_config(learning_rate=0.0, momentum=0.9, weight_decay=5e-4),
      gate_optimizer=default.optimizer_config(learning_rate=0.1, momentum=0.0))
  tx = optim.create_optimizer(config, steps_per_epoch=5)
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  labels = optim.param_labels(PARAMS)
  for label, update in zip(jax.tree.leaves(labels), jax.tree.leaves(updates)):
    expected = -0.05 if label == "gate" else 0.0
    np.testing.assert_allclose(update, expected, atol=1e-7)


def test_same_gate_optimizer_is_one_group():
  config = _config(optimizer=default.optimizer_config(learning_rate=0.2, momentum=0.0))
  tx = optim.create_optimizer(config, steps_per_epoch=5)
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  for update in jax.tree.leaves(updates):
    np.testing.assert_allclose(update, -0.1, atol=1e-7)


def test_sgd_coupled_weight_decay_and_momentum_as_pytorch():
  # PyTorch SGD: d = g + wd * w; buf = m * buf + d; w -= lr * buf.
  opt = default.optimizer_config(learning_rate=0.1, momentum=0.9, weight_decay=0.5)
  tx = optim.group_optimizer(opt, steps_per_epoch=5, num_epochs=10)
  w = {"k": jnp.array([2.0])}
  g = {"k": jnp.array([1.0])}
  state = tx.init(w)
  u1, state = tx.update(g, state, w)
  np.testing.assert_allclose(u1["k"], [-0.1 * (1.0 + 0.5 * 2.0)], rtol=1e-6)
  w2 = {"k": w["k"] + u1["k"]}
  u2, _ = tx.update(g, state, w2)
  buf = 0.9 * 2.0 + (1.0 + 0.5 * float(w2["k"][0]))
  np.testing.assert_allclose(u2["k"], [-0.1 * buf], rtol=1e-6)


def test_rmsprop_matches_tf1():
  # TF1 RMSProp: ms = 1 initially; ms = rho*ms + (1-rho) g^2;
  # mom = mu*mom + lr * g / sqrt(ms + eps); w -= mom.
  opt = default.optimizer_config(name="rmsprop", learning_rate=0.01, momentum=0.9)
  tx = optim.group_optimizer(opt, steps_per_epoch=5, num_epochs=10)
  w = {"k": jnp.array([0.0])}
  state = tx.init(w)
  ms, mom = 1.0, 0.0
  for g in (2.0, -1.0):
    ms = 0.9 * ms + 0.1 * g * g
    mom = 0.9 * mom + 0.01 * g / math.sqrt(ms + 1.0)
    update, state = tx.update({"k": jnp.array([g])}, state, w)
    np.testing.assert_allclose(update["k"], [-mom], rtol=1e-6)


def test_clip_by_global_norm():
  opt = default.optimizer_config(learning_rate=1.0, momentum=0.0, clip_norm=1.0)
  tx = optim.group_optimizer(opt, steps_per_epoch=5, num_epochs=10)
  g = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # norm 5 -> scaled by 1/5
  update, _ = tx.update(g, tx.init(g), g)
  np.testing.assert_allclose([update["a"][0], update["b"][0]], [-0.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize("step,expected", [(0, 0.1), (19, 0.1), (20, 0.01), (39, 0.01),
                                           (40, 0.001), (49, 0.001)])
def test_step_schedule_per_epoch(step, expected):
  opt = default.optimizer_config(learning_rate=0.1, schedule="step", milestones=(2, 4))
  schedule = optim.learning_rate_schedule(opt, steps_per_epoch=10, num_epochs=5)
  np.testing.assert_allclose(schedule(step), expected, rtol=1e-6)


def test_cosine_schedule_epoch_and_step_units():
  per_epoch = optim.learning_rate_schedule(
      default.optimizer_config(learning_rate=1.0, schedule="cosine"), 10, 4)
  # epoch 2 of 4: 0.5 * (1 + cos(pi / 2)) = 0.5, constant within the epoch.
  np.testing.assert_allclose([per_epoch(20), per_epoch(29)], [0.5, 0.5], atol=1e-6)
  np.testing.assert_allclose(per_epoch(10), 0.5 * (1 + math.cos(math.pi / 4)), rtol=1e-6)
  per_step = optim.learning_rate_schedule(
      default.optimizer_config(learning_rate=1.0, schedule="cosine", schedule_unit="step"), 10, 4)
  np.testing.assert_allclose(per_step(25), 0.5 * (1 + math.cos(math.pi * 25 / 40)), rtol=1e-6)
  np.testing.assert_allclose(per_step(40), 0.0, atol=1e-7)


def test_linear_warmup():
  opt = default.optimizer_config(learning_rate=1.0, warmup_epochs=1, schedule_unit="step")
  schedule = optim.learning_rate_schedule(opt, steps_per_epoch=4, num_epochs=10)
  np.testing.assert_allclose([schedule(s) for s in range(5)], [0.25, 0.5, 0.75, 1.0, 1.0],
                             rtol=1e-6)
