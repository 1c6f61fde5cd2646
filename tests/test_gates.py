"""The gate plug-in interface: the registry, a user gate trained through
`python -m dynjax.main`, and the Bernoulli (rate-regularised) gate."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from dynjax import flops, models
from dynjax.layers import (DynamicConv, Policy, bernoulli, gated_layers, get_gate,
                           is_gate_param, list_gates, register_gate, unregister_gate)
from dynjax.sparse import sparse_apply
from dynjax.train import config_check, losses, optim
from dynjax.train.steps import Objective

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("fast_cpu_compiles")


@pytest.fixture
def toy_gate():
  """The user gate of `_USER_CONFIG` (below), registered in this process."""
  namespace = {}
  exec(compile(_USER_CONFIG, "my_gate_config.py", "exec"), namespace)  # registers it
  yield "keep_positive"
  unregister_gate("keep_positive")


def test_builtin_gates_are_registered():
  assert {"dense", "static", "fbs", "ftwt", "bernoulli"} <= set(list_gates())
  assert get_gate("fbs").scopes == ("predictor",)
  assert get_gate("static").width(Policy("static", density=0.3), 10) == 3


def test_unknown_method_is_an_error_everywhere():
  with pytest.raises(ValueError, match=r"dynamic.method must be one of \[.*'bernoulli'.*\], "
                                       r"got 'nope'"):
    Policy("nope")
  config = default.get_config()
  config.dynamic.method = "nope"
  with pytest.raises(config_check.ConfigError, match="dynamic.method must be one of"):
    config_check.validate(config)
  with pytest.raises(ValueError, match="dynamic.method must be one of"):
    Objective.create("nope")


def test_register_gate_refuses_duplicates_and_non_gates(toy_gate):
  gate_class = type(get_gate(toy_gate))
  with pytest.raises(ValueError, match="already registered"):
    register_gate(gate_class())
  with pytest.raises(TypeError, match="needs a dynjax Gate"):
    register_gate(object())

  class Clash(gate_class):
    name = "toy_clash"

  with pytest.raises(ValueError, match="loss key 'keep_weight' of gate 'toy_clash' is already used"):
    register_gate(Clash())


def test_a_registered_gate_owns_its_parameters_loss_and_macs(toy_gate):
  model = models.create("mcifarnet", dynamic=toy_gate, width_multiplier=0.0625)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  labels = optim.param_labels(variables["params"])
  flat = jax.tree_util.tree_leaves_with_path(labels)
  heads = [label for path, label in flat if "keep_head" in str(path)]
  others = [label for path, label in flat if "keep_head" not in str(path)]
  assert heads and set(heads) == {optim.GATE} and set(others) == {optim.BACKBONE}
  for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"]):
    assert is_gate_param(path) == ("keep_head" in str(path))
    if "keep_head" in str(path):
      assert not losses.is_l2_kernel(path)

  # Its loss reaches the objective with the config's weight.
  _, updated = model.apply(variables, x, train=True, mutable=["batch_stats", "dynamic"],
                           rngs={"dropout": jax.random.PRNGKey(2)})
  layers = gated_layers(updated["dynamic"])
  objective = Objective.create(toy_gate, keep_weight=2.0)
  value, metrics = objective.policy.gate.loss(layers, objective.weights, 0, 1, objective.policy)
  expected = 2.0 * sum(float(jnp.mean(jnp.square(e["score"]))) for _, e in layers)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  assert set(metrics) == {"keep_loss"}

  # Its heads are overhead in the FLOP counter; without the registration they are not.
  fn = lambda v, x: model.apply(v, x)
  report = flops.count(fn, variables, x).under("ftwt_code")
  head_rows = [r for r in report.rows if "keep_head" in r.path]
  assert head_rows and all(r.dense_macs == 0 for r in head_rows)

  # No sparse decision: the executor runs the layer as it is.
  np.testing.assert_allclose(sparse_apply(model, variables, x), model.apply(variables, x),
                             rtol=1e-6, atol=1e-6)


def test_objective_takes_gate_weights_and_defaults():
  objective = Objective.create("ftwt", num_epochs=10, ftwt_cooldown=0.2)
  assert objective.weights == {"ftwt_mask_weight": 1.0, "ftwt_cooldown": 0.2}
  with pytest.raises(ValueError, match=r"unknown loss weight\(s\) \['fbs_lasso'\] for gate 'ftwt'"):
    Objective.create("ftwt", fbs_lasso=1.0)
  config = default.get_config()
  config.dynamic.method = "fbs"
  config.loss.fbs_lasso = 0.25
  assert Objective.from_config(config).weights == {"fbs_lasso": 0.25}


# --- the Bernoulli gate -------------------------------------------------------


def test_rate_loss_hand_computed():
  layers = [("a", {"gate_prob": jnp.array([[0.2, 0.8], [0.4, 0.6]]), "mask": jnp.ones((2, 2))}),
            ("b", {"gate_prob": jnp.array([[0.9, 0.7, 0.8]]), "mask": jnp.ones((1, 3))})]
  # rate = (0.5 + 0.8) / 2 = 0.65; 2 * (0.65 - 0.4)^2 = 0.125
  loss, rate = bernoulli.rate_loss(layers, target=0.4, weight=2.0)
  np.testing.assert_allclose(rate, 0.65, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.125, rtol=1e-5)
  gate = get_gate("bernoulli")
  value, metrics = gate.loss(layers, {"bernoulli_rate_weight": 2.0}, 0, 1,
                             Policy("bernoulli", density=0.4))
  np.testing.assert_allclose(value, 0.125, rtol=1e-5)
  assert set(metrics) == {"bernoulli_rate_loss", "bernoulli_rate"}


def test_relaxed_mask_is_a_hard_sample_with_the_gumbel_sigmoid_gradient():
  logits = jnp.array([[-2.0, -0.1, 0.0, 0.3, 1.5]])
  key = jax.random.PRNGKey(3)
  tau = 0.5
  mask, soft = bernoulli.relaxed_mask(logits, tau, key)
  u = jax.random.uniform(key, logits.shape, jnp.float32, 1e-6, 1.0 - 1e-6)
  noisy = logits + jnp.log(u) - jnp.log1p(-u)
  np.testing.assert_array_equal(mask, (noisy > 0).astype(jnp.float32))
  weights = jnp.array([[1.0, -2.0, 3.0, 0.5, -1.0]])
  grad = jax.grad(lambda l: jnp.sum(bernoulli.relaxed_mask(l, tau, key)[0] * weights))(logits)
  s = jax.nn.sigmoid(noisy / tau)
  np.testing.assert_allclose(grad, weights * s * (1 - s) / tau, rtol=1e-5)


def test_bernoulli_head_learns_only_through_the_relaxation():
  """Train mode without a noise rng: m = 1[l > 0] forward, d m / d l = s(1 - s) / tau."""
  tau = 0.7
  policy = Policy("bernoulli", density=0.5, options={"temperature": tau, "init_bias": 0.0})
  layer = DynamicConv(6, kernel_size=3, policy=policy)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 5, 4))
  variables = layer.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda p: p, variables["params"])
  params["bernoulli"]["fc"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (4, 6))
  cotangent = jax.random.normal(jax.random.PRNGKey(4), (3, 5, 5, 6))

  def loss(p):
    out, _ = layer.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                         train=True, mutable=["batch_stats", "dynamic"])
    return jnp.sum(out * cotangent)

  grads = jax.grad(loss)(params)
  # By hand: out = relu(BN(z)) * m, so dL/dm = sum_hw relu(BN(z)) * cotangent.
  dense = DynamicConv(6, kernel_size=3, policy=Policy("dense"))
  unmasked, _ = dense.apply({"params": {k: params[k] for k in ("conv", "bn")},
                             "batch_stats": variables["batch_stats"]}, x, train=True,
                            mutable=["batch_stats"])
  d_mask = jnp.sum(unmasked * cotangent, axis=(1, 2))
  logits = jnp.mean(x, axis=(1, 2)) @ params["bernoulli"]["fc"]["kernel"] + \
      params["bernoulli"]["fc"]["bias"]
  s = jax.nn.sigmoid(logits / tau)
  d_logits = d_mask * s * (1 - s) / tau
  np.testing.assert_allclose(grads["bernoulli"]["fc"]["bias"], d_logits.sum(0),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads["bernoulli"]["fc"]["kernel"],
                             jnp.mean(x, axis=(1, 2)).T @ d_logits, rtol=1e-4, atol=1e-6)
  assert 0 < float(jnp.mean((logits > 0).astype(jnp.float32))) < 1  # both branches seen


def _bernoulli_mcifarnet():
  policy = dict(method="bernoulli", density=0.5, options={"init_bias": 0.0})
  model = models.create("mcifarnet", dynamic=policy, width_multiplier=0.125)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  # A spread of head outputs, so that some channels are off and some on.
  keys = iter(jax.random.split(jax.random.PRNGKey(5), 64))
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: jax.random.normal(next(keys), p.shape) * 2.0
      if "bernoulli" in str(path) else p, variables["params"])
  return model, {"params": params, "batch_stats": variables["batch_stats"]}, x


def test_bernoulli_eval_is_deterministic_and_the_executor_matches_it():
  model, variables, x = _bernoulli_mcifarnet()
  out1, state = model.apply(variables, x, mutable=["dynamic"])
  out2 = model.apply(variables, x)
  np.testing.assert_array_equal(out1, out2)
  layers = gated_layers(state["dynamic"])
  assert len(layers) == 8  # conv0 .. conv7
  for _, records in layers:
    np.testing.assert_array_equal(records["mask"], (records["gate_prob"] > 0.5).astype(jnp.float32))
  fraction = float(np.mean([np.mean(r["mask"]) for _, r in layers]))
  assert 0.1 < fraction < 0.9
  np.testing.assert_allclose(sparse_apply(model, variables, x), out2, rtol=1e-4, atol=1e-4)


def test_bernoulli_training_masks_are_random_samples():
  model, variables, x = _bernoulli_mcifarnet()

  def masks(seed):
    _, state = model.apply(variables, x, train=True, mutable=["batch_stats", "dynamic"],
                           rngs={"dropout": jax.random.PRNGKey(seed)})
    return np.concatenate([np.ravel(r["mask"]) for _, r in gated_layers(state["dynamic"])])

  a, b = masks(0), masks(1)
  assert set(np.unique(a)) <= {0.0, 1.0}
  assert 0 < np.mean(a != b) < 0.5
  np.testing.assert_array_equal(a, masks(0))


def test_bernoulli_head_macs_are_gate_overhead():
  model, variables, x = _bernoulli_mcifarnet()
  fn = lambda v, x: model.apply(v, x)
  exact = flops.count(fn, variables, x)
  heads = [r for r in exact.rows if "bernoulli" in r.path]
  assert len(heads) == 8 and all(r.dense_macs > 0 for r in heads)
  ftwt = exact.under("ftwt_code")
  assert all(r.dense_macs == 0 for r in ftwt.rows if "bernoulli" in r.path)


# --- a user's gate through the command line ---------------------------------

_USER_CONFIG = '''
import flax.linen as nn
import jax.numpy as jnp

from dynjax.layers import Gate, register_gate
from dynjax.train import defaults


class KeepPositive(Gate):
  """Keeps the channels whose head score is positive; penalises large scores."""

  name = "keep_positive"
  scopes = ("keep_head",)
  records = ("score", "mask")
  loss_keys = {"keep_weight": 0.01}

  def __call__(self, layer, policy, x, z, *, train, residual):
    y = layer.batch_norm(z, train)
    score = nn.Dense(z.shape[-1], name="keep_head")(jnp.mean(x, axis=(1, 2)))
    mask = (score > 0).astype(y.dtype)
    layer.record("score", score)
    layer.record("mask", mask)
    out = layer.act(y if residual is None else y + residual)
    return out * mask[:, None, None, :]

  def loss(self, layers, weights, epoch, num_epochs, policy):
    value = weights["keep_weight"] * sum(jnp.mean(jnp.square(e["score"])) for _, e in layers)
    return value, {"keep_loss": value}


register_gate(KeepPositive(), replace=True)


def get_config():
  config = defaults.get_config()
  config.model_kwargs = {"width_multiplier": 0.125}
  config.dynamic.method = "keep_positive"
  config.num_epochs = 1
  config.max_train_steps = 6
  config.log_every_steps = 2
  config.checkpoint_every_steps = 100
  config.count_flops = True
  return config
'''


@pytest.mark.slow
def test_a_user_gate_trains_with_dynjax_main_without_touching_dynjax(tmp_path):
  config_path = tmp_path / "my_gate_config.py"
  config_path.write_text(textwrap.dedent(_USER_CONFIG))
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run(
      [sys.executable, "-m", "dynjax.main", f"--config={config_path}", f"--workdir={workdir}",
       "--config.loss.keep_weight=0.05"],
      cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  train = [r for r in records if "train_keep_loss" in r]
  assert train and all(np.isfinite(r["train_keep_loss"]) for r in train)
  assert any("train_active_fraction" in r for r in records)
  assert not any("train_fbs_lasso" in r or "train_ftwt_mask_loss" in r for r in records)
