"""MAC rules against hand formulas: conv variants, dot, calls, loops, unknowns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynjax import flops

S = jax.ShapeDtypeStruct


def conv_macs(n, ho, wo, kh, kw, cin, cout, groups=1):
  """Hand formula: every output element is a (cin/groups)*kh*kw dot."""
  return n * ho * wo * cout * (cin // groups) * kh * kw


def conv(x, w, strides=(1, 1), padding="SAME", groups=1, rhs_dilation=(1, 1),
         dims=("NHWC", "HWIO", "NHWC")):
  return jax.lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=rhs_dilation,
                                      dimension_numbers=dims, feature_group_count=groups)


@pytest.mark.parametrize("case", [
    # (x shape, kernel shape, kwargs, (Ho, Wo), groups)
    ((2, 9, 9, 4), (3, 3, 4, 6), {}, (9, 9), 1),                                    # SAME
    ((2, 9, 9, 4), (3, 3, 4, 6), dict(padding="VALID"), (7, 7), 1),                # VALID
    ((2, 9, 9, 4), (3, 3, 4, 6), dict(strides=(2, 2)), (5, 5), 1),                 # strided
    ((2, 9, 9, 4), (3, 3, 4, 6), dict(padding=((2, 0), (1, 1))), (9, 9), 1),       # explicit pads
    ((2, 9, 9, 4), (3, 3, 4, 6), dict(rhs_dilation=(2, 2), padding="VALID"), (5, 5), 1),  # dilated
    ((2, 9, 9, 8), (3, 3, 2, 8), dict(groups=4), (9, 9), 4),                        # grouped
    ((2, 9, 9, 6), (5, 5, 1, 6), dict(groups=6, strides=(2, 2)), (5, 5), 6),       # depthwise
    ((2, 9, 7, 4), (1, 3, 4, 6), dict(padding="VALID"), (9, 5), 1),                # rectangular
])
def test_conv_variants_match_hand_formula(case):
  xs, ws, kw, (ho, wo), groups = case
  # The kernel is a positional array argument too: name the batched one.
  counter = flops.Counter(lambda w, x: conv(x, w, **kw), batch_argnums=(1,))
  report = counter(S(ws, jnp.float32), S(xs, jnp.float32))
  expected = conv_macs(1, ho, wo, ws[0], ws[1], xs[3], ws[3], groups)
  assert report.batch_size == 2
  assert report.dense_macs == expected
  assert [r.primitive for r in report.rows] == ["conv_general_dilated"]


def test_nchw_layout():
  x, w = S((3, 4, 10, 10), jnp.float32), S((8, 4, 3, 3), jnp.float32)
  report = flops.Counter(lambda x, w: conv(x, w, dims=("NCHW", "OIHW", "NCHW")),
                         batch_argnums=(0,))(x, w)
  assert report.dense_macs == conv_macs(1, 10, 10, 3, 3, 4, 8)


def test_dot_general_batched_einsum():
  def fn(params, q, k):
    h = q @ params["w"]  # [N, T, 8] x [8, 16]
    return jnp.einsum("ntd,nsd->nts", h, k)  # batch dim n, contract d

  params = {"w": S((8, 16), jnp.float32)}
  report = flops.count_dense(fn, params, S((4, 5, 8), jnp.float32), S((4, 7, 16), jnp.float32))
  assert report.batch_size == 4
  assert [r.dense_macs for r in report.rows] == [5 * 8 * 16, 5 * 7 * 16]


def test_calls_are_recursed_and_scan_multiplied():
  w = jnp.ones((6, 6))

  @jax.custom_vjp
  def cvjp(x):
    return x @ w

  cvjp.defvjp(lambda x: (cvjp(x), None), lambda _, g: (g @ w.T,))

  @jax.jit
  def jitted(x):
    return jax.nn.relu(x @ w)  # relu is a custom_jvp inside a jit

  def fn(x):
    x = jitted(x)
    x = jax.checkpoint(lambda a: a @ w)(x)
    x = cvjp(x)
    x, _ = jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)
    return x

  report = flops.count_dense(fn, S((3, 6), jnp.float32))
  per_dot = 6 * 6
  assert report.dense_macs == per_dot * (1 + 1 + 1 + 5)
  assert report.unknown_primitives == {}


def test_cond_counts_costliest_branch_and_while_is_noted():
  w = jnp.ones((6, 6))

  def fn(x, flag):
    x = jax.lax.cond(flag[0] > 0, lambda a: a @ w @ w, lambda a: a @ w, x)
    return jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ w, c[1] + 1), (x, 0))[0]

  report = flops.Counter(fn, batch_argnums=(0,))(S((2, 6), jnp.float32), S((1,), jnp.int32))
  assert report.dense_macs == 36 * 2 + 36
  assert any("while" in note for note in report.notes)


def test_unknown_primitive_is_listed():
  from jax.extend.core import Primitive
  from jax.interpreters import mlir

  strange = Primitive("strange_op")
  strange.def_impl(lambda x: x * 2)
  strange.def_abstract_eval(lambda x: x)
  mlir.register_lowering(strange, mlir.lower_fun(lambda x: x * 2, multiple_results=False))
  report = flops.count(lambda x: strange.bind(x) @ jnp.ones((4, 4)), jnp.ones((2, 4)))
  assert report.unknown_primitives == {"strange_op": 1}
  assert "strange_op" in str(report)
  assert report.macs_mean == 16  # the unknown op is evaluated; its result stays dense


def test_mask_aware_hand_example():
  """Input channel exactly zero for one example; a mask after the activation."""
  x = np.ones((2, 4, 4, 3), np.float32)
  x[0, :, :, 1] = 0.0  # example 0: input channel 1 is zero everywhere
  mask = np.array([[1, 0, 1, 0, 0], [1, 1, 1, 1, 0]], np.float32)  # [N, Cout]
  w = jnp.ones((3, 3, 3, 5)) * 0.1

  def fn(x, mask):
    y = jax.nn.relu(conv(x, w) + 1.0)
    return (y * mask[:, None, None, :]).sum((1, 2))

  report = flops.Counter(fn, batch_argnums=(0, 1))(x, mask)
  per = 4 * 4 * 9
  np.testing.assert_array_equal(report.macs_per_example, [per * 2 * 2, per * 3 * 4])
  assert report.dense_macs == per * 3 * 5
  row = report.rows[0]
  assert row.gated
  assert row.in_active == pytest.approx((2 / 3 + 1) / 2)
  assert row.out_active == pytest.approx((2 / 5 + 4 / 5) / 2)
  assert report.reduction == pytest.approx(1 - (4 + 12) / 2 / 15)
  assert report.to_dict()["macs_max"] == per * 12


def test_bad_convention_is_a_clear_error():
  report = flops.count_dense(lambda x: x @ jnp.ones((2, 2)), S((1, 2), jnp.float32))
  with pytest.raises(ValueError, match="unknown convention"):
    report.under("thop")
  with pytest.raises(ValueError, match="density"):
    report.under("fbs_condconv_paper")


def test_elementwise_sample_axis_prefers_a_plain_axis_over_a_folded_one():
  """At batch 1 a folded axis (e.g. a CondConv output) and a plain one both fit; order must not matter."""
  from dynjax.flops import graph as G
  folded, plain = (3, 4), (0, 1)  # sample axis folded into channels (blocks of 4) / plain axis 0
  shapes = [(1, 5, 5, 4), (1, 1, 1, 4)]
  for locs, shp in (([folded, plain], shapes), ([plain, folded], shapes[::-1])):
    node = G.Node(jax.lax.mul_p, (0, 1), (2,), {}, "")
    assert G.node_out_locs(node, locs, shp, [(1, 5, 5, 4)]) == [plain]
