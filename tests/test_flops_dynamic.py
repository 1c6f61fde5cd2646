"""Mask-aware counts of gated Linen models equal the formulas from their masks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynjax import flops
from dynjax.layers import DynamicConv, Policy

N, HW, K = 3, 6 * 6, 9


class Stack(nn.Module):
  """conv 3->8, conv 8->8 (optionally depthwise), conv 8->8 (+ residual), dense."""
  policy: Policy
  depthwise: bool = False
  residual: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    block = lambda name, groups=1: DynamicConv(8, policy=self.policy, activation=nn.swish,
                                               feature_group_count=groups, name=name)
    x = block("c0")(x, train=train)
    y = block("c1", 8 if self.depthwise else 1)(x, train=train)
    y = block("c2")(y, train=train, residual=x if self.residual else None)
    return nn.Dense(4, name="head")(y.mean((1, 2)))


def run(policy, **kw):
  model = Stack(policy, **kw)
  x = jax.random.normal(jax.random.PRNGKey(1), (N, 6, 6, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  _, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["dynamic"]))(variables, x)
  masks = {k: np.asarray(v["mask"]) for k, v in state["dynamic"].items()}
  return flops.count(model.apply, variables, x), masks


def rows(report):
  return {(r.path, r.primitive[:3]): m for r, m in zip(report.rows, report.layer_macs)}


@pytest.fixture(scope="module")
def fbs_condconv():
  return run(Policy("fbs", density=0.5, experts=2))


def test_fbs_with_condconv_equals_mask_formula(fbs_condconv):
  report, m = fbs_condconv
  a = {k: v.sum(-1) for k, v in m.items()}
  got = rows(report)
  assert np.all(a["c0"] == 4)
  np.testing.assert_array_equal(got[("c0/conv", "con")], HW * K * 3 * a["c0"])
  np.testing.assert_array_equal(got[("c1/conv", "con")], HW * K * a["c0"] * a["c1"])
  np.testing.assert_array_equal(got[("c2/conv", "con")], HW * K * a["c1"] * a["c2"])
  # CondConv kernel mixing: n = 2 MACs per surviving kernel weight.
  np.testing.assert_array_equal(got[("c2/conv", "dot")], 2 * K * a["c1"] * a["c2"])
  # Gate heads see the active input channels; routers too.
  np.testing.assert_array_equal(got[("c2/predictor/fc", "dot")], a["c1"] * 8)
  np.testing.assert_array_equal(got[("c2/conv/router", "dot")], a["c1"] * 2)
  np.testing.assert_array_equal(got[("head", "dot")], a["c2"] * 4)
  assert report.active_fractions()["c2/conv"] == pytest.approx((0.5, 0.5))
  # Dense: convs, 2-expert kernel mixing, predictor + router FCs, head.
  assert report.dense_macs == pytest.approx(
      HW * K * (3 * 8 + 64 + 64) + 2 * K * (3 * 8 + 64 + 64) + (3 + 8 + 8) * (8 + 2) + 8 * 4)


@pytest.mark.parametrize("after", [False, True])
def test_ftwt_residual_and_depthwise_equal_mask_formula(after):
  report, m = run(Policy("ftwt", mass=0.9, mask_after_residual=after), depthwise=True,
                  residual=True)
  a = {k: v.sum(-1) for k, v in m.items()}
  got = rows(report)
  assert 0 < np.mean([v.mean() for v in m.values()]) < 1  # the gates do prune
  np.testing.assert_array_equal(got[("c0/conv", "con")], HW * K * 3 * a["c0"])
  # Depthwise: a channel costs K*HW when its input and its output are active.
  both = (m["c0"] * m["c1"]).sum(-1)
  np.testing.assert_array_equal(got[("c1/conv", "con")], HW * K * both)
  # ... so c2's non-zero inputs are those channels (not just c1's mask).
  np.testing.assert_array_equal(got[("c2/conv", "con")], HW * K * both * a["c2"])
  # Gate heads take a softmax of the pooled input: every input channel counts.
  np.testing.assert_array_equal(got[("c2/gate/fc", "dot")], np.full(N, 8 * 8))
  # Block output: the mask before the add leaves the residual channels alive.
  head_in = m["c2"] if after else np.maximum(m["c2"], m["c0"])
  np.testing.assert_array_equal(got[("head", "dot")], head_in.sum(-1) * 4)

  code = rows(report.under("ftwt_code"))
  np.testing.assert_array_equal(code[("c0/conv", "con")], HW * K * 3 * a["c0"])
  np.testing.assert_array_equal(code[("c1/conv", "con")], HW * K * (a["c0"] // 8) * a["c1"])
  np.testing.assert_array_equal(code[("c2/conv", "con")], HW * K * a["c1"] * a["c2"])
  assert code[("head", "dot")].sum() == 0 and code[("c2/gate/fc", "dot")].sum() == 0


def test_table_dict_and_trace_only_count(fbs_condconv):
  report, _ = fbs_condconv
  text = str(report)
  for name in ("c0/conv", "c1/predictor/fc", "head", "total", "convention: exact"):
    assert name in text
  d = report.to_dict()
  assert d["batch_size"] == N and len(d["rows"]) == len(report.rows)
  assert d["macs_mean"] < d["dense_macs"] and d["measured"]
  model = Stack(Policy("fbs", density=0.5, experts=2))
  x = jax.ShapeDtypeStruct((N, 6, 6, 3), jnp.float32)
  dense = flops.count_dense(model.apply, jax.eval_shape(model.init, jax.random.PRNGKey(0), x), x)
  assert dense.dense_macs == report.dense_macs and not dense.measured


def test_count_ignores_jit_trace_cache():
  # The counter traces CondConv with its "batched" lowering. A jitted apply
  # that already ran (and so cached its im2col trace) must count the same as
  # the plain function: the lowering is part of jit's cache key.
  model = Stack(Policy("fbs", density=0.5, experts=2))
  x = jax.random.normal(jax.random.PRNGKey(1), (N, 6, 6, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  jitted = jax.jit(model.apply)
  jitted(variables, x)
  warm = flops.Counter(jitted)(variables, x)
  plain = flops.Counter(model.apply)(variables, x)
  assert warm.dense_macs == plain.dense_macs
  np.testing.assert_array_equal(warm.macs_per_example, plain.macs_per_example)
  assert [(r.path, r.primitive) for r in warm.rows] == [(r.path, r.primitive) for r in plain.rows]
