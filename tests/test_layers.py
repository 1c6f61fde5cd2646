"""DynamicConv and CondConv behaviour on small hand-checkable cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dynjax.layers import CondConv, DynamicConv, Policy, masks


def _init_apply(module, x, train=True, **kw):
  variables = module.init(jax.random.PRNGKey(0), x, train=False, **kw)
  out, state = module.apply(variables, x, train=train, mutable=["batch_stats", "dynamic"], **kw)
  return variables, out, state


# ----------------------------------------------------------------- CondConv
@pytest.mark.parametrize("method", ["batched", "mixture", "im2col", "auto"])
@pytest.mark.parametrize("cin,cout,groups,stride,padding", [
    (6, 4, 1, 1, "SAME"), (6, 4, 1, 2, "SAME"), (4, 6, 2, 1, "VALID"),
    (8, 8, 8, 1, "SAME"), (8, 8, 8, 2, "SAME"), (4, 8, 4, 1, ((1, 0), (2, 1))),
    (8, 8, 8, 2, ((1, 0), (2, 1)))])
def test_condconv_equals_per_example_loop(method, cin, cout, groups, stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 7, cin))
  layer = CondConv(cout, 3, stride, padding, num_experts=3, feature_group_count=groups,
                   method=method)
  variables = layer.init(jax.random.PRNGKey(2), x)
  out, state = layer.apply(variables, x, mutable=["dynamic"])
  experts = variables["params"]["experts"]
  router = variables["params"]["router"]
  assert experts.shape == (3, 3, 3, cin // groups, cout)
  assert router["kernel"].shape == (cin, 3)
  alpha = jax.nn.sigmoid(x.mean((1, 2)) @ router["kernel"] + router["bias"])
  np.testing.assert_allclose(state["dynamic"]["alpha"], alpha, rtol=1e-5)
  for b in range(3):
    kernel = sum(alpha[b, i] * experts[i] for i in range(3))
    ref = jax.lax.conv_general_dilated(
        x[b:b + 1], kernel, (stride, stride), padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    np.testing.assert_allclose(out[b], ref[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("hw,stride,taps", [
    ((1, 1), 1, [4]), ((1, 3), 1, [3, 4, 5]), ((2, 2), 1, list(range(9))),
    ((2, 2), 2, [0, 1, 3, 4])])
def test_im2col_skips_taps_that_only_read_padding(hw, stride, taps):
  """3x3 SAME taps that never touch the map are dropped; values and gradients unchanged."""
  from dynjax.layers import condconv
  x = jax.random.normal(jax.random.PRNGKey(1), (2, *hw, 5))
  assert condconv.live_taps(x.shape, 3, 3, (stride, stride), "SAME") == taps
  experts = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 3, 5, 4))
  alpha = jax.random.uniform(jax.random.PRNGKey(3), (2, 3))

  def loss(fn, x, w, a):
    return jnp.sum(jnp.sin(fn(x, w, a, (stride, stride), "SAME", 1)))

  for fn in (condconv.condconv_im2col, condconv.condconv_mixture):
    out = fn(x, experts, alpha, (stride, stride), "SAME", 1)
    for b in range(2):
      kernel = jnp.tensordot(alpha[b], experts, axes=1)
      ref = jax.lax.conv_general_dilated(x[b:b + 1], kernel, (stride, stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
      np.testing.assert_allclose(out[b], ref[0], atol=2e-5, rtol=1e-4)
  grads = jax.grad(functools.partial(loss, condconv.condconv_im2col), argnums=(0, 1, 2))(
      x, experts, alpha)
  grads_ref = jax.grad(functools.partial(loss, condconv.condconv_mixture), argnums=(0, 1, 2))(
      x, experts, alpha)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, atol=1e-4, rtol=1e-4)


def test_condconv_bias_and_jit_and_grad():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 4))
  layer = CondConv(3, 1, num_experts=2, use_bias=True)
  variables = layer.init(jax.random.PRNGKey(0), x)
  variables = jax.tree.map(lambda v: v, variables)
  variables["params"]["bias"] = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
  out = jax.jit(layer.apply)(variables, x)
  alpha = jax.nn.sigmoid(x.mean((1, 2)) @ variables["params"]["router"]["kernel"]
                         + variables["params"]["router"]["bias"])
  no_bias = jnp.einsum("bhwc,bco->bhwo", x,
                       jnp.einsum("bn,ncd->bcd", alpha, variables["params"]["experts"][:, 0, 0]))
  np.testing.assert_allclose(out - no_bias, jnp.broadcast_to(
      (alpha @ variables["params"]["bias"])[:, None, None], out.shape), atol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x) ** 2))(variables["params"])
  assert float(jnp.abs(grads["router"]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads["experts"]).sum()) > 0


# ------------------------------------------------------------------ dense
def test_dense_policy_is_conv_bn_relu():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 6, 3))
  layer = DynamicConv(5)
  variables, out, state = _init_apply(layer, x, train=False)
  conv = nn.Conv(5, (3, 3), use_bias=False)
  z = conv.apply({"params": variables["params"]["conv"]}, x)
  bn = variables["batch_stats"]["bn"]
  y = (z - bn["mean"]) / jnp.sqrt(bn["var"] + 1e-5)
  y = y * variables["params"]["bn"]["scale"] + variables["params"]["bn"]["bias"]
  np.testing.assert_allclose(out, jax.nn.relu(y), atol=1e-5)
  assert "dynamic" not in state or not state["dynamic"]


def test_static_policy_builds_ceil_d_channels():
  x = jnp.ones((2, 4, 4, 3))
  layer = DynamicConv(10, policy=Policy("static", density=0.33))
  variables, out, _ = _init_apply(layer, x)
  assert out.shape == (2, 4, 4, 4)  # ceil(3.3)
  assert variables["params"]["conv"]["kernel"].shape == (3, 3, 3, 4)


# -------------------------------------------------------------------- FBS
@pytest.mark.parametrize("experts", [0, 2])
def test_fbs_suppressed_channels_exactly_zero(experts):
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 6, 6, 5))
  layer = DynamicConv(10, policy=Policy("fbs", density=0.3, experts=experts),
                      activation=nn.swish)
  variables, out, state = _init_apply(layer, x)
  mask = state["dynamic"]["mask"]
  assert mask.shape == (8, 10)
  np.testing.assert_array_equal(mask.sum(-1), np.full(8, 3))
  # Losers output exactly zero everywhere.
  off = np.asarray(out) * (1 - np.asarray(mask))[:, None, None, :]
  assert np.all(off == 0.0)
  # Winners are boosted by the saliency: out = act(g * BN_noaffine(z) + beta).
  sal = state["dynamic"]["saliency"]
  assert sal.shape == (8, 10) and float(sal.min()) >= 0.0
  winners = np.asarray(out)[np.broadcast_to(np.asarray(mask)[:, None, None, :] == 1, out.shape)]
  assert np.abs(winners).sum() > 0


def test_fbs_density_one_keeps_all_and_scales_by_saliency():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 5, 3))
  layer = DynamicConv(6, policy=Policy("fbs", density=1.0), activation=None)
  variables, out, state = _init_apply(layer, x)
  np.testing.assert_array_equal(state["dynamic"]["mask"], np.ones((4, 6)))
  z = nn.Conv(6, (3, 3), use_bias=False).apply({"params": variables["params"]["conv"]}, x)
  zn = (z - z.mean((0, 1, 2))) / jnp.sqrt(z.var((0, 1, 2)) + 1e-5)
  g = state["dynamic"]["saliency"][:, None, None, :]
  np.testing.assert_allclose(out, g * zn, atol=1e-4)


def test_fbs_predictor_gradient_only_from_winners():
  x = jax.random.normal(jax.random.PRNGKey(3), (6, 5, 5, 4))
  layer = DynamicConv(8, policy=Policy("fbs", density=0.25), activation=None)
  variables = layer.init(jax.random.PRNGKey(0), x)

  def loss(params):
    out, st = layer.apply({**variables, "params": params}, x, train=True,
                          mutable=["batch_stats", "dynamic"])
    return jnp.sum(out * jnp.arange(1.0, 9.0)), st["dynamic"]["mask"]

  grads, mask = jax.grad(loss, has_aux=True)(variables["params"])
  bias_grad = np.asarray(grads["predictor"]["fc"]["bias"])
  # Per-output-channel bias gradient is zero for channels that never win.
  never = np.asarray(mask).sum(0) == 0
  assert never.any()
  np.testing.assert_array_equal(bias_grad[never], 0.0)
  assert np.abs(bias_grad[~never]).sum() > 0


# ------------------------------------------------------------------- FTWT
def _ftwt(mode="decoupled", **kw):
  return DynamicConv(6, policy=Policy("ftwt", mass=0.9, mode=mode, **kw))


def test_ftwt_records_mask_logits_target_and_masks_output():
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 6, 6, 4))
  layer = _ftwt()
  variables = layer.init(jax.random.PRNGKey(0), x)
  # Make the gate input-dependent and mixed: some channels on, some off.
  variables = jax.tree.map(lambda v: v, variables)
  variables["params"]["gate"]["fc"]["bias"] = jnp.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
  out, state = layer.apply(variables, x, train=False, mutable=["dynamic"])
  dyn = state["dynamic"]
  np.testing.assert_array_equal(dyn["mask"], (dyn["gate_logits"] > 0).astype(jnp.float32))
  masked = np.asarray(out) * (1 - np.asarray(dyn["mask"]))[:, None, None, :]
  assert np.all(masked == 0.0)
  # Target = FTWT mass mask of the unmasked output relu(BN(conv(x))).
  dense = DynamicConv(6)
  unmasked = dense.apply({"params": {k: variables["params"][k] for k in ("conv", "bn")},
                          "batch_stats": variables["batch_stats"]}, x, train=False)
  np.testing.assert_array_equal(dyn["target"], masks.ftwt_target_mask(unmasked, 0.9))
  # Gate: softmax(mean_hw(x)) @ W + b.
  p = variables["params"]["gate"]["fc"]
  ref = jax.nn.softmax(x.mean((1, 2)), -1) @ p["kernel"] + p["bias"]
  np.testing.assert_allclose(dyn["gate_logits"], ref, rtol=1e-5, atol=1e-6)


def _gate_loss_grad_wrt_input(mode):
  """Gradient of a BCE-style gate loss w.r.t. the output of an upstream conv."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 6, 3))
  up = nn.Conv(4, (3, 3))
  layer = _ftwt(mode)
  up_vars = up.init(jax.random.PRNGKey(1), x)
  variables = layer.init(jax.random.PRNGKey(2), up.apply(up_vars, x))

  def gate_loss(up_params):
    h = up.apply({"params": up_params}, x)
    _, st = layer.apply(variables, h, train=True, mutable=["batch_stats", "dynamic"])
    logits, target = st["dynamic"]["gate_logits"], st["dynamic"]["target"]
    return jnp.sum(jnp.mean(
        jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits))), 0))

  return jax.grad(gate_loss)(up_vars["params"])


def test_ftwt_decoupled_blocks_gate_loss_upstream_and_joint_does_not():
  g_dec = _gate_loss_grad_wrt_input("decoupled")
  g_joint = _gate_loss_grad_wrt_input("joint")
  assert all(float(jnp.abs(v).sum()) == 0.0 for v in jax.tree.leaves(g_dec))
  assert sum(float(jnp.abs(v).sum()) for v in jax.tree.leaves(g_joint)) > 0


def test_ftwt_task_loss_reaches_gate_only_with_ste():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 6, 3))
  for ste, expect_nonzero in [(False, False), (True, True)]:
    layer = _ftwt(gate_ste=ste)
    variables = layer.init(jax.random.PRNGKey(2), x)

    def task(params):
      out, _ = layer.apply({**variables, "params": params}, x, train=True,
                           mutable=["batch_stats", "dynamic"])
      return jnp.sum(out ** 2)

    g = jax.grad(task)(variables["params"])["gate"]
    total = sum(float(jnp.abs(v).sum()) for v in jax.tree.leaves(g))
    assert (total > 0) == expect_nonzero


def test_ftwt_residual_mask_before_and_after():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 5, 6))
  res = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 5, 6))
  for after in (False, True):
    layer = DynamicConv(6, policy=Policy("ftwt", mass=0.8, mask_after_residual=after))
    variables = layer.init(jax.random.PRNGKey(0), x, residual=res)
    variables = jax.tree.map(lambda v: v, variables)
    variables["params"]["gate"]["fc"]["bias"] = jnp.array([5.0, -5, 5, -5, 5, -5])
    out, st = layer.apply(variables, x, train=False, residual=res, mutable=["dynamic"])
    m = np.asarray(st["dynamic"]["mask"])[:, None, None, :]
    if after:  # the whole block output is masked
      assert np.all(np.asarray(out) * (1 - m) == 0)
    else:  # masked channels still carry relu(residual)
      np.testing.assert_allclose(np.asarray(out) * (1 - m),
                                 np.asarray(jax.nn.relu(res)) * (1 - m), atol=1e-6)


def test_layers_under_jit_and_sharded_batch():
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  devices = np.array(jax.devices()[:8])
  mesh = Mesh(devices, ("data",))
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 6, 6, 4))
  for policy in (Policy("fbs", density=0.5, experts=2), Policy("ftwt", mass=0.9)):
    layer = DynamicConv(8, policy=policy)
    variables = layer.init(jax.random.PRNGKey(0), x)
    f = jax.jit(lambda v, x: layer.apply(v, x, train=True, mutable=["batch_stats", "dynamic"]))
    ref, _ = f(variables, x)
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    out, st = f(variables, xs)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert st["dynamic"]["mask"].shape == (16, 8)


def test_policy_validation_messages():
  with pytest.raises(ValueError, match=r"density \(d\) must be in \(0, 1\]"):
    Policy("fbs", density=1.2)
  with pytest.raises(ValueError, match=r"mass \(r\)"):
    Policy("ftwt", mass=0.0)
  with pytest.raises(ValueError, match="method must be one of"):
    Policy("gumbel")
  with pytest.raises(ValueError, match="unknown dynamic policy field"):
    Policy.create({"method": "fbs", "densty": 0.5})
  assert Policy.create({"method": "fbs", "density": 0.5}).width(10) == 10
  assert Policy.create("static", density=0.5).width(10) == 5


def test_fbs_depthwise_prefers_channels_with_live_input():
  # Channels 0-3 of every example are switched off upstream (all zero).
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 5, 8)).at[..., :4].set(0.0)
  layer = DynamicConv(8, feature_group_count=8, policy=Policy("fbs", density=0.5))
  variables = layer.init(jax.random.PRNGKey(1), x)
  # Bias the predictor towards the dead channels: they would win without the rule.
  params = jax.tree.map(lambda v: v, variables["params"])
  params["predictor"]["fc"]["bias"] = jnp.array([9.0] * 4 + [1.0] * 4)
  out, state = layer.apply({**variables, "params": params}, x, train=True,
                           mutable=["batch_stats", "dynamic"])
  np.testing.assert_array_equal(state["dynamic"]["mask"], np.tile([0, 0, 0, 0, 1, 1, 1, 1], (3, 1)))
  np.testing.assert_array_equal(state["dynamic"]["saliency"][:, :4], 0.0)
  assert float(jnp.abs(out[..., 4:]).sum()) > 0


def test_gated_batch_norm_matches_autodiff_of_the_formula():
  """Forward, running stats and the hand-written backward against flax BN + autodiff."""
  from dynjax.layers import GatedBatchNorm
  keys = jax.random.split(jax.random.PRNGKey(7), 4)
  z = 3.0 * jax.random.normal(keys[0], (3, 4, 5, 6)) + 1.5
  scale = jax.random.uniform(keys[1], (3, 6)) * (jax.random.uniform(keys[2], (3, 6)) > 0.4)
  shift = 0.1 * jax.random.normal(keys[3], (3, 6))
  du = jax.random.normal(jax.random.PRNGKey(8), z.shape)
  ours, ref = GatedBatchNorm(momentum=0.8, epsilon=1e-3), nn.BatchNorm(
      momentum=0.8, epsilon=1e-3, use_scale=False, use_bias=False)
  v_ours = ours.init(jax.random.PRNGKey(0), z, scale, shift, use_running_average=False)
  v_ref = ref.init(jax.random.PRNGKey(0), z, use_running_average=False)
  assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)

  def f_ours(z, scale, shift):
    u, st = ours.apply(v_ours, z, scale, shift, use_running_average=False,
                       mutable=["batch_stats"])
    return jnp.sum(u * du), st

  def f_ref(z, scale, shift):
    zn, st = ref.apply(v_ref, z, use_running_average=False, mutable=["batch_stats"])
    return jnp.sum((zn * scale[:, None, None] + shift[:, None, None]) * du), st

  (val, st), grads = jax.jit(jax.value_and_grad(f_ours, argnums=(0, 1, 2), has_aux=True))(
      z, scale, shift)
  (val_r, st_r), grads_r = jax.value_and_grad(f_ref, argnums=(0, 1, 2), has_aux=True)(
      z, scale, shift)
  np.testing.assert_allclose(val, val_r, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(st), jax.tree.leaves(st_r)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for g, g_r in zip(grads, grads_r):
    np.testing.assert_allclose(g, g_r, rtol=1e-4, atol=1e-5)
  # Eval mode uses the running statistics.
  u_eval = ours.apply(st, z, scale, shift, use_running_average=True)
  zn_eval = ref.apply(st_r, z, use_running_average=True)
  np.testing.assert_allclose(u_eval, zn_eval * scale[:, None, None] + shift[:, None, None],
                             rtol=1e-5, atol=1e-6)


def test_fbs_strict_ties_silence_zero_saliency_winners():
  """With a dead predictor (g = 0 everywhere) exact_k emits act(beta) on k channels; strict emits 0."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
  outs = {}
  for ties in ("exact_k", "strict"):
    layer = DynamicConv(8, policy=dict(method="fbs", density=0.5, fbs_ties=ties))
    variables = layer.init(jax.random.PRNGKey(1), x)
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: -jnp.ones_like(v) if "predictor" in str(p) and "bias" in str(p) else v,
        variables["params"])
    params["beta"] = jnp.full((8,), 0.5)
    outs[ties], state = layer.apply(dict(variables, params=params), x, mutable=["dynamic"])
    mask = state["dynamic"]["mask"]
    np.testing.assert_array_equal(state["dynamic"]["saliency"], 0.0)
    np.testing.assert_array_equal(mask.sum(-1), [4, 4] if ties == "exact_k" else [0, 0])
  np.testing.assert_allclose(outs["exact_k"].max(), 0.5)  # relu(beta) on the 4 "winners"
  np.testing.assert_array_equal(outs["strict"], 0.0)


def test_fbs_predictor_takes_the_layer_activation_when_asked():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 5))
  records = {}
  for act in ("relu", "layer"):
    layer = DynamicConv(6, policy=dict(method="fbs", density=0.5, fbs_predictor_act=act),
                        activation=nn.swish)
    variables = layer.init(jax.random.PRNGKey(1), x)
    params = dict(variables["params"])
    # A predictor bias of -0.5 makes some pre-activations negative.
    params["predictor"] = jax.tree.map(lambda v: v, params["predictor"])
    params["predictor"]["fc"]["bias"] = jnp.full((6,), -0.5)
    _, state = layer.apply(dict(variables, params=params), x, mutable=["dynamic"])
    records[act] = state["dynamic"]["saliency"]
  fc = params["predictor"]["fc"]
  pre = jnp.mean(jnp.abs(x), axis=(1, 2)) @ fc["kernel"] + fc["bias"]
  np.testing.assert_allclose(records["relu"], nn.relu(pre), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(records["layer"], nn.swish(pre), rtol=1e-5, atol=1e-6)
  assert float(records["layer"].min()) < 0.0


def test_torch_batch_norm_running_variance_matches_pytorch():
  """Forward, running mean/var (unbiased, n/(n-1)) and eval output against torch.nn.BatchNorm2d."""
  torch = pytest.importorskip("torch")
  from dynjax.layers.gated_bn import TorchBatchNorm
  z = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (4, 2, 3, 5)) + 0.7
  bn = TorchBatchNorm(momentum=0.9, epsilon=1e-5)
  variables = bn.init(jax.random.PRNGKey(0), z, use_running_average=False)
  params = {"scale": jnp.linspace(0.5, 1.5, 5), "bias": jnp.linspace(-0.2, 0.2, 5)}
  variables = dict(variables, params=params)
  tb = torch.nn.BatchNorm2d(5, eps=1e-5, momentum=0.1)
  with torch.no_grad():
    tb.weight.copy_(torch.tensor(np.asarray(params["scale"])))
    tb.bias.copy_(torch.tensor(np.asarray(params["bias"])))
  zt = torch.tensor(np.asarray(z)).permute(0, 3, 1, 2)
  state = variables
  for _ in range(2):
    y, new = bn.apply(state, z, use_running_average=False, mutable=["batch_stats"])
    state = dict(state, **new)
    yt = tb.train()(zt).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["mean"], tb.running_mean.numpy(), rtol=1e-6)
  np.testing.assert_allclose(state["batch_stats"]["var"], tb.running_var.numpy(), rtol=1e-6)
  y_eval = bn.apply(state, z, use_running_average=True)
  np.testing.assert_allclose(y_eval, tb.eval()(zt).permute(0, 2, 3, 1).detach().numpy(),
                             rtol=1e-5, atol=1e-5)
  # Flax's own BatchNorm would have stored the biased variance.
  flax_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
  _, flax_state = flax_bn.apply(flax_bn.init(jax.random.PRNGKey(0), z, use_running_average=False),
                                z, use_running_average=False, mutable=["batch_stats"])
  assert not np.allclose(flax_state["batch_stats"]["var"], 0.9 + 0.1 * np.var(
      np.asarray(z), axis=(0, 1, 2), ddof=1), rtol=1e-6)


@pytest.mark.parametrize("experts", [0, 2])
def test_gated_and_dense_bn_running_variance_unbiased_like_pytorch(experts):
  """DynamicConv with bn_unbiased_var stores var * M/(M-1) for dense and FBS layers."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 4))
  for method in ("dense", "fbs"):
    stats = {}
    for unbiased in (False, True):
      layer = DynamicConv(6, policy=dict(method=method, density=0.5, experts=experts),
                          bn_unbiased_var=unbiased, bn_momentum=0.0)
      variables = layer.init(jax.random.PRNGKey(1), x)
      _, new = layer.apply(variables, x, train=True, mutable=["batch_stats", "dynamic"])
      stats[unbiased] = new["batch_stats"]["bn"]
    count = 2 * 3 * 3
    np.testing.assert_allclose(stats[True]["var"], stats[False]["var"] * count / (count - 1),
                               rtol=1e-5)
    np.testing.assert_allclose(stats[True]["mean"], stats[False]["mean"], rtol=1e-6)
