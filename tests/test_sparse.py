"""The sparse executor equals the masked-dense eval forward, computing less."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from dynjax import models
from dynjax.layers import DynamicConv
from dynjax.sparse import (PATHS, CostModel, SparseExecutor, active_conv, active_indices, bucket_sizes,
                           gather_channels, scatter_channels, sparse_apply)


def _conv(x, k, stride=1, padding="SAME"):
  return jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _random_stats(variables, key):
  """Move BN statistics and every 1-D parameter away from their init values."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(key, len(leaves))
  leaves = [l + 0.2 * jnp.abs(jax.random.normal(k, l.shape)) if l.ndim == 1 else l
            for k, l in zip(keys, leaves)]
  return jax.tree.unflatten(tree, leaves)


# ------------------------------------------------------------ primitives
def test_bucket_sizes_and_active_indices():
  assert bucket_sizes(10, (0.25, 0.5, 0.75, 1.0)) == (3, 5, 8, 10)
  assert bucket_sizes(4, (0.1,)) == (1, 4)
  with pytest.raises(ValueError, match="bucket fractions"):
    bucket_sizes(4, (0.0,))
  mask = jnp.array([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0]], jnp.float32)
  idx = active_indices(mask, 3)
  np.testing.assert_array_equal(idx[0], [1, 3, 4])
  assert int(idx[1, 0]) == 0 and len(set(np.asarray(idx[1]).tolist())) == 3


def test_gather_scatter_roundtrip():
  x = jnp.arange(2 * 2 * 5, dtype=jnp.float32).reshape(2, 1, 2, 5)
  idx = jnp.array([[0, 3], [1, 4]])
  compact = gather_channels(x, idx)
  np.testing.assert_array_equal(compact[1, 0, 1], [x[1, 0, 1, 1], x[1, 0, 1, 4]])
  dense = scatter_channels(compact, idx, 5, fill=-1.0)
  np.testing.assert_array_equal(dense[0, 0, 0], [0, -1, -1, 3, -1])


@pytest.mark.parametrize("batch", [1, 2])
def test_active_conv_matches_dense_slice(batch):
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (batch, 5, 5, 6))
  w = jax.random.normal(jax.random.fold_in(key, 1), (3, 3, 6, 4))
  in_idx = jnp.array([[0, 2, 5], [1, 2, 3]])[:batch]
  out_idx = jnp.array([[3, 1], [0, 2]])[:batch]
  out = active_conv(gather_channels(x, in_idx), w, in_idx, out_idx, (2, 2), "SAME")
  for b in range(batch):
    keep = jnp.zeros(6).at[in_idx[b]].set(1.0)
    ref = _conv(x[b:b + 1] * keep, w, 2)[..., out_idx[b]]
    np.testing.assert_allclose(out[b:b + 1], ref, rtol=1e-5, atol=1e-5)
  # CondConv experts mixed by alpha, on the survivors only.
  experts = jax.random.normal(jax.random.fold_in(key, 2), (2, 3, 3, 6, 4))
  alpha = jnp.array([[0.3, 0.9], [1.0, 0.1]])[:batch]
  out = active_conv(gather_channels(x, in_idx), experts, in_idx, out_idx, (1, 1), "VALID", alpha)
  for b in range(batch):
    keep = jnp.zeros(6).at[in_idx[b]].set(1.0)
    kernel = alpha[b, 0] * experts[0] + alpha[b, 1] * experts[1]
    ref = _conv(x[b:b + 1] * keep, kernel, 1, "VALID")[..., out_idx[b]]
    np.testing.assert_allclose(out[b:b + 1], ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ whole models
def _model_case(policy, batch=3):
  # Swish where the predictor takes the layer's activation (else it equals ReLU).
  activation = "swish" if policy.get("fbs_predictor_act") == "layer" else "relu"
  model = models.create("mcifarnet", dynamic=policy, width_multiplier=0.125,
                        activation=activation)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, 10, 10, 3))
  variables = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.PRNGKey(1), x)
  return model, _random_stats(variables, jax.random.PRNGKey(2)), x


@pytest.mark.parametrize("policy", [
    dict(method="fbs", density=0.5),
    dict(method="fbs", density=0.25),
    dict(method="fbs", density=0.5, experts=2),
    dict(method="ftwt", mass=0.9),
    dict(method="fbs", density=0.25, fbs_ties="strict", fbs_predictor_act="layer"),
], ids=["fbs0.5", "fbs0.25", "fbs-condconv", "ftwt", "fbs-strict-layer-act"])
def test_mcifarnet_sparse_equals_masked_dense(policy):
  model, variables, x = _model_case(policy, batch=2 if policy.get("experts") else 3)
  ref, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["dynamic"]))(
      variables, x)
  # Every plan, forced on every layer, and the cost model's choice, at batch 1 and 3.
  for path in PATHS:
    executor = SparseExecutor(model, bucket_fractions=(0.5, 1.0), path=path)
    np.testing.assert_allclose(executor(variables, x), ref, rtol=1e-4, atol=1e-6,
                               err_msg=path)
    if path in ("auto", "per_example"):  # at batch 1 union == per-example
      np.testing.assert_allclose(executor(variables, x[:1]), ref[:1], rtol=1e-4, atol=1e-6,
                                 err_msg=f"{path} batch 1")
  if policy["method"] == "ftwt":  # the gates really produce partial masks
    fractions = [float(m.mean()) for m in jax.tree.leaves(state["dynamic"])
                 if m.ndim == 2 and set(np.unique(m)) <= {0.0, 1.0}]
    assert any(0.0 < f < 1.0 for f in fractions)


def test_fbs_executor_convolves_only_winners():
  """Batch 1 at d = 0.5: every gated conv runs on ceil(d*C_in) -> ceil(d*C_out)."""
  model, variables, x = _model_case(dict(method="fbs", density=0.5), batch=1)
  jaxpr = jax.make_jaxpr(lambda v, x: sparse_apply(model, v, x, path="per_example"))(
      variables, x)
  kernels = [e.invars[1].aval.shape for e in jaxpr.eqns
             if e.primitive.name == "conv_general_dilated"]
  widths = [8, 8, 16, 16, 16, 24, 24, 24]  # M-CifarNet at width 1/8
  expected = [(3, 3, 3, 4)] + [(3, 3, c_in // 2, c_out // 2)
                               for c_in, c_out in zip(widths, widths[1:])]
  assert kernels[:8] == expected
  assert kernels[8] == (1, 1, 24, 10)  # logits: ungated
  # The cost model chooses: where convolution MACs dominate, the sparse plan;
  # where gathers cost a lot, every gated layer runs its full convolution.
  dense_kernels = [(3, 3, 3, 8)] + [(3, 3, c_in, c_out) for c_in, c_out in zip(widths, widths[1:])]
  for costs, want in [(CostModel(conv=(0, 1e-9, 0, 0), gather=(0, 0), scatter=(0, 0)), expected),
                      (CostModel(gather=(1.0, 0.0)), dense_kernels)]:
    jaxpr = jax.make_jaxpr(lambda v, x: sparse_apply(model, v, x, cost_model=costs))(
        variables, x)
    kernels = [e.invars[1].aval.shape for e in jaxpr.eqns
               if e.primitive.name == "conv_general_dilated"]
    assert kernels[:8] == want
  jaxpr = jax.make_jaxpr(lambda v, x: sparse_apply(model, v, x, path="dense"))(variables, x)
  kernels = [e.invars[1].aval.shape for e in jaxpr.eqns
             if e.primitive.name == "conv_general_dilated"]
  assert kernels[:8] == dense_kernels
  with pytest.raises(ValueError, match="path must be one of"):
    SparseExecutor(model, path="sparse")


class _ResidualNet(nn.Module):
  """Two gated convs and a residual add, as in a ResNet basic block."""
  policy: dict

  @nn.compact
  def __call__(self, x, train=False):
    x = DynamicConv(8, policy=self.policy, name="stem")(x, train=train)
    y = DynamicConv(8, policy=self.policy, name="conv1")(x, train=train)
    y = DynamicConv(8, policy=self.policy, activation=None, name="conv2")(y, train=train)
    y = DynamicConv(8, policy=self.policy, name="conv3")(y, train=train, residual=x)
    return jnp.mean(y, axis=(1, 2))


@pytest.mark.parametrize("policy", [
    dict(method="fbs", density=0.5),
    dict(method="ftwt", mass=0.9),
    dict(method="ftwt", mass=0.9, mask_after_residual=True),
], ids=["fbs", "ftwt", "ftwt-after-residual"])
def test_residual_and_identity_activation(policy):
  model = _ResidualNet(policy)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 6, 6, 4))
  variables = _random_stats(jax.jit(model.init)(jax.random.PRNGKey(4), x), jax.random.PRNGKey(5))
  ref = jax.jit(model.apply)(variables, x)
  out = jax.jit(lambda v, x: sparse_apply(model, v, x, bucket_fractions=(0.5,)))(variables, x)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("policy", [dict(method="ftwt", mass=0.9), dict(method="fbs", density=0.25)],
                         ids=["ftwt", "fbs"])
def test_union_plan_convolves_the_batch_union(policy):
  """Examples sharing their active sets: one convolution over the union, exact."""
  model, variables, x = _model_case(policy, batch=1)
  x = jnp.concatenate([x, x, 1.0001 * x])  # (almost) the same channels for all three
  ref = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  executor = SparseExecutor(model, bucket_fractions=(0.25, 0.5, 0.75), path="union")
  np.testing.assert_allclose(executor(variables, x), ref, rtol=1e-4, atol=1e-6)
  plans = executor.plans(variables, x)
  assert len(plans) == 8
  for p in plans:
    plan, k_in, k_out = p["plan"]
    assert p["union_out"] <= k_out  # the branch that ran holds the union
    if plan == "union":
      assert p["union_in"] <= k_in
  # The union is the examples' shared set, so some layers run well below their width.
  narrowed = [p for p in plans if p["plan"][0] == "union" and p["plan"][2] < p["c_out"]]
  assert len(narrowed) >= 4, plans


def test_union_order():
  from dynjax.sparse.executor import _UnionOrder
  order = _UnionOrder.of(jnp.array([0, 1, 0, 0, 1, 1, 0], jnp.float32))
  np.testing.assert_array_equal(order.perm, [1, 4, 5, 0, 2, 3, 6])  # union first
  v = jnp.arange(2 * 4, dtype=jnp.float32).reshape(2, 1, 1, 4)  # channels 1, 4, 5, 0
  np.testing.assert_array_equal(order.spread(v, fill=-1.0)[1, 0, 0], [7, 4, -1, -1, 5, 6, -1])


def test_fit_profiles_counts_and_keeps_the_fastest_plan_set():
  from dynjax.sparse.executor import VARIANTS
  model, variables, x = _model_case(dict(method="fbs", density=0.25), batch=2)
  executor = SparseExecutor(model)
  ref = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  np.testing.assert_allclose(executor(variables, x), ref, rtol=1e-4, atol=1e-6)  # fits first
  assert len(executor.profiles[2]) == 8 and all(len(v) == 1 for v in executor.profiles[2].values())
  timings = executor.timings[2]
  assert set(timings) == set(VARIANTS)
  fastest = min(timings, key=timings.get)
  assert executor.allowed[2] in (fastest, ("dense",))
  if timings[fastest] < 0.95 * timings[("dense",)]:
    assert executor.allowed[2] == fastest
  executor.fit(variables, [x[::-1]], measure=False)  # more samples, no timing
  assert all(len(v) == 2 for v in executor.profiles[2].values()) and 2 not in executor.allowed
  for samples, p in zip(executor.profiles[2].values(), executor.plans(variables, x)):
    for u_in, u_out in samples:
      assert 0 < u_out <= p["c_out"] and 0 < u_in <= p["c_in"]


def test_interleaved_seconds_orders_programs_by_work():
  from dynjax.sparse.cost import interleaved_seconds
  light = jax.jit(lambda x: x.sum())
  heavy = jax.jit(lambda x: (x @ x @ x).sum())
  x = jnp.ones((192, 192), jnp.float32)
  t_light, t_heavy = interleaved_seconds([light, heavy], [(x,)], min_seconds=0.01, rounds=3)
  assert 0 < t_light < t_heavy
