"""The model zoo: registry, structure, counts, widths, and jitted training.

Structure tests trace abstractly (`jax.eval_shape`, no compilation); only the
forward+gradient tests compile, on tiny widths and inputs. Variables for those
are random values of the right shapes (compiling the real initialisers would
cost more than the tests themselves); real initialisation is tested once.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynjax import models
from dynjax.layers import Policy, is_gate_param
from dynjax.models import common

TINY = 1 / 16
# A small input per model (M-CifarNet on 8x8x1 digits, as the quickstart).
INPUTS = {
    "mcifarnet": (2, 8, 8, 1),
    "vgg16_bn": (2, 32, 32, 3),
    "resnet56": (2, 8, 8, 3),
    "mobilenet_v1": (2, 16, 16, 3),
    "mobilenet_v1_imagenet": (2, 32, 32, 3),
    "resnet18": (2, 32, 32, 3),
    "resnet34": (2, 32, 32, 3),
}
GATES = {"mcifarnet": 8, "vgg16_bn": 13, "resnet56": 55, "mobilenet_v1": 27,
         "mobilenet_v1_imagenet": 27, "resnet18": 17, "resnet34": 33}
POLICIES = {
    "dense": None,
    "static": dict(method="static", density=0.3),
    "fbs": dict(method="fbs", density=0.5),
    "ftwt": dict(method="ftwt", mass=0.9),
    "fbs_condconv": dict(method="fbs", density=0.5, experts=2),
    "ftwt_condconv": dict(method="ftwt", mass=0.9, experts=2),
}
RNGS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


pytestmark = pytest.mark.usefixtures("fast_cpu_compiles")


def _abstract_init(model, shape, train=False):
  """(logits, variables) shapes of `init_with_output`, traced, not compiled."""
  return jax.eval_shape(lambda x: model.init_with_output(RNGS, x, train=train),
                        jax.ShapeDtypeStruct(shape, jnp.float32))


def _leaves_named(tree, name):
  found = []
  for key, value in tree.items():
    if key == name and not isinstance(value, dict):
      found.append(value)
    elif isinstance(value, dict):
      found.extend(_leaves_named(value, name))
  return found


# ------------------------------------------------------------------ registry
def test_resnet20_is_the_standard_cifar_resnet20():
  """19 gated convs (stem + 3 stages x 3 blocks x 2) and the usual 269,722 parameters."""
  model = models.create("resnet20", num_classes=10, dynamic=dict(method="ftwt", mass=0.9))
  dense = models.create("resnet20", num_classes=10)
  x = jnp.zeros((1, 32, 32, 3))
  shapes = jax.eval_shape(lambda: dense.init(jax.random.PRNGKey(0), x, train=False))
  assert sum(int(np.prod(l.shape)) for l in jax.tree.leaves(shapes["params"])) == 269_722
  gated = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  assert len([p for p in jax.tree_util.tree_leaves_with_path(gated["params"])
              if "gate" in jax.tree_util.keystr(p[0]) and "kernel" in jax.tree_util.keystr(p[0])]) == 19


def test_registry_names_and_errors():
  assert models.list_models() == ["mcifarnet", "vgg16_bn", "resnet56", "resnet20", "mobilenet_v1",
                                  "mobilenet_v1_imagenet", "resnet18", "resnet34"]
  with pytest.raises(ValueError, match=r"unknown model 'resnet50'.*resnet18"):
    models.create("resnet50")
  with pytest.raises(TypeError, match=r"unknown option\(s\) \['depth'\].*width_multiplier"):
    models.create("resnet56", depth=20)
  with pytest.raises(TypeError, match="stage_sizes"):
    models.create("resnet18", stage_sizes=(1, 1, 1, 1))
  with pytest.raises(ValueError, match="dynamic.method"):
    models.create("vgg16_bn", dynamic=dict(method="sparse"))
  with pytest.raises(ValueError, match="unknown dynamic policy field"):
    models.create("vgg16_bn", dynamic=dict(method="fbs", sparsity=0.5))
  with pytest.raises(ValueError, match="width_multiplier"):
    models.create("resnet18", width_multiplier=0)
  with pytest.raises(ValueError, match="num_classes"):
    models.create("resnet18", num_classes=0)
  with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'swish'\]"):
    models.create("mcifarnet", activation="gelu")
  with pytest.raises(ValueError, match="variant"):
    models.MobileNetV1(variant="tiny")
  model = models.create("mcifarnet", num_classes=7, dynamic="fbs", activation="swish",
                        dropout_rate=0.2, bn_momentum=0.9)
  assert model.dynamic == Policy("fbs") and model.num_classes == 7
  assert models.create("mobilenet_v1_imagenet", width_multiplier=0.25).variant == "imagenet"


def test_scale_channels_and_option_a_shortcut_by_hand():
  assert [common.scale_channels(c, 0.75) for c in (32, 64, 1024)] == [24, 48, 768]
  assert common.scale_channels(16, 1 / 32) == 1
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  y = models.option_a_shortcut(jnp.concatenate([x, -x], -1), 4, 2)
  # 2x2 average of [[0, 1], [4, 5]] = 2.5, etc.; two zero channels appended.
  np.testing.assert_allclose(y[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
  np.testing.assert_allclose(y[0, :, :, 1], -y[0, :, :, 0])
  np.testing.assert_array_equal(y[..., 2:], 0.0)
  grad = lambda stop: jax.grad(lambda x: models.option_a_shortcut(x, 2, 2, stop).sum())(x)
  np.testing.assert_array_equal(grad(True), 0.0)  # the official code's x.data
  np.testing.assert_allclose(grad(False), 0.25)


# ------------------------------------------------ every (model, policy) pair
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", list(INPUTS))
def test_output_shape_and_recorded_tensors(name, policy):
  model = models.create(name, num_classes=6, dynamic=POLICIES[policy], width_multiplier=TINY)
  logits, variables = _abstract_init(model, INPUTS[name], train=True)
  assert logits.shape == (2, 6) and logits.dtype == jnp.float32
  dynamic = variables.get("dynamic", {})
  masks = _leaves_named(dynamic, "mask")
  spec = Policy.create(POLICIES[policy])
  assert len(masks) == (GATES[name] if spec.gated else 0)
  assert all(m.ndim == 2 and m.shape[0] == 2 for m in masks)
  if spec.method == "fbs":
    assert len(_leaves_named(dynamic, "saliency")) == GATES[name]
  if spec.method == "ftwt":
    assert len(_leaves_named(dynamic, "gate_logits")) == GATES[name]
    assert len(_leaves_named(dynamic, "target")) == GATES[name]
  assert len(_leaves_named(dynamic, "alpha")) == (GATES[name] if spec.experts else 0)


def _expected_gated_paths(name):
  if name == "mcifarnet":
    return [f"conv{i}" for i in range(8)]
  if name == "vgg16_bn":
    return [f"conv{i}" for i in range(13)]
  if name.startswith("mobilenet"):
    return ["stem"] + [f"block{i}/{kind}" for i in range(1, 14)
                       for kind in ("depthwise", "pointwise")]
  stages = {"resnet56": (9, 9, 9), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[name]
  return ["stem"] + [f"layer{s + 1}_{b}/conv{k}" for s, blocks in enumerate(stages)
                     for b in range(blocks) for k in (1, 2)]


@pytest.mark.parametrize("name", list(INPUTS))
def test_gated_layer_paths_in_execution_order(name):
  model = models.create(name, dynamic="ftwt", width_multiplier=TINY)
  paths = models.gated_layers(model, INPUTS[name])
  assert paths == _expected_gated_paths(name)
  assert len(paths) == GATES[name]


# ------------------------------------------------------------ dense counts
def _mcifarnet_params():
  widths = [64, 64, 128, 128, 128, 192, 192, 192]
  conv = sum(9 * cin * cout for cin, cout in zip([3] + widths[:-1], widths))
  assert conv == 1_291_968  # docs/methods.md#m-cifarnet
  return conv + 2 * sum(widths) + 192 * 10 + 10


def _vgg16_params():
  widths = [c for c in models.vgg.VGG16_CFG if c != "M"]
  return sum(9 * cin * cout + 3 * cout  # kernel, conv bias, BN scale + bias
             for cin, cout in zip([3] + widths[:-1], widths)) + 512 * 10 + 10


def _resnet56_params():
  total, cin = 9 * 3 * 16 + 2 * 16, 16
  for width in (16, 32, 64):
    for _ in range(9):
      total += 9 * cin * width + 9 * width * width + 4 * width
      cin = width
  return total + 64 * 10 + 10


def _mobilenet_params(num_classes):
  total, cin = 27 * 32 + 2 * 32, 32
  for cout, _ in models.mobilenet.MOBILENET_V1_BLOCKS:
    total += 9 * cin + 2 * cin + cin * cout + 2 * cout
    cin = cout
  return total + 1024 * num_classes + num_classes


@pytest.mark.parametrize("name,num_classes,expected", [
    ("mcifarnet", 10, _mcifarnet_params()),          # 1,296,074
    ("vgg16_bn", 10, _vgg16_params()),               # 14,728,266
    ("resnet56", 10, _resnet56_params()),            # 853,018
    ("mobilenet_v1", 10, _mobilenet_params(10)),     # 3,217,226
    ("mobilenet_v1_imagenet", 1000, 4_231_976),      # PyTorch MobileNetV1 1.0
    ("resnet18", 1000, 11_689_512),                  # torchvision resnet18
    ("resnet34", 1000, 21_797_672),                  # torchvision resnet34
])
def test_dense_parameter_counts(name, num_classes, expected):
  model = models.create(name, num_classes=num_classes)
  _, variables = _abstract_init(model, (1, 32, 32, 3))
  assert models.count_params(variables["params"]) == expected
  assert set(variables) == {"params", "batch_stats"}  # dense: nothing recorded


def test_mobilenet_width_multiplier_matches_published_sizes():
  model = models.create("mobilenet_v1_imagenet", num_classes=1000, width_multiplier=0.25)
  _, variables = _abstract_init(model, (1, 32, 32, 3))
  params = variables["params"]
  assert params["stem"]["conv"]["kernel"].shape == (3, 3, 3, 8)
  assert params["block13"]["pointwise"]["conv"]["kernel"].shape == (1, 1, 256, 256)
  assert params["fc"]["kernel"].shape == (256, 1000)


# ------------------------------------------------------------ static widths
STATIC_KERNELS = {  # d = 0.3: ceil(0.3 * C); residual streams stay full
    "mcifarnet": {"conv0/conv": (3, 3, 3, 20), "conv2/conv": (3, 3, 20, 39),
                  "conv5/conv": (3, 3, 39, 58), "logits": (1, 1, 58, 10)},
    "vgg16_bn": {"conv0/conv": (3, 3, 3, 20), "conv12/conv": (3, 3, 154, 154),
                 "fc": (154, 10)},
    "resnet56": {"stem/conv": (3, 3, 3, 16), "layer1_0/conv1/conv": (3, 3, 16, 5),
                 "layer1_0/conv2/conv": (3, 3, 5, 16), "layer2_0/conv1/conv": (3, 3, 16, 10),
                 "layer3_8/conv2/conv": (3, 3, 20, 64), "fc": (64, 10)},
    "mobilenet_v1": {"stem/conv": (3, 3, 3, 10), "block1/depthwise/conv": (3, 3, 1, 10),
                     "block1/pointwise/conv": (1, 1, 10, 20),
                     "block13/depthwise/conv": (3, 3, 1, 308),
                     "block13/pointwise/conv": (1, 1, 308, 308), "fc": (308, 10)},
    "resnet18": {"stem/conv": (7, 7, 3, 64), "layer1_0/conv1/conv": (3, 3, 64, 20),
                 "layer1_0/conv2/conv": (3, 3, 20, 64),
                 "layer2_0/downsample_conv": (1, 1, 64, 128),
                 "layer4_1/conv1/conv": (3, 3, 512, 154), "fc": (512, 10)},
}


@pytest.mark.parametrize("name", list(STATIC_KERNELS))
def test_static_widths(name):
  model = models.create(name, dynamic=dict(method="static", density=0.3))
  _, variables = _abstract_init(model, (1, 32, 32, 3))
  for path, shape in STATIC_KERNELS[name].items():
    node = variables["params"]
    for key in path.split("/"):
      node = node[key]
    assert node["kernel"].shape == shape, path


# ------------------------------------------- jitted forward + gradient
def _random_variables(shapes, seed=0):
  """Plausible random values: fan-in scaled kernels, unit BN scale / var."""
  rng = np.random.default_rng(seed)

  def sample(path, s):
    key = str(path[-1].key)
    if key in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    if key in ("kernel", "experts"):
      fan_in = math.prod(s.shape[1:-1] if key == "experts" else s.shape[:-1])
      return jnp.asarray(rng.standard_normal(s.shape) / math.sqrt(fan_in), s.dtype)
    return jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def _train_step_fn(model):
  def loss(params, batch_stats, x, key):
    logits, state = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats", "dynamic"], rngs={"dropout": key})
    return jnp.mean(logits ** 2), (logits, state)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _forward_backward(name, policy, compile_it=True):
  model = models.create(name, dynamic=POLICIES[policy], width_multiplier=TINY)
  x = jax.random.normal(jax.random.PRNGKey(3), INPUTS[name])
  variables = _random_variables(_abstract_init(model, INPUTS[name])[1])
  args = (variables["params"], variables["batch_stats"], x, jax.random.PRNGKey(4))
  step = _train_step_fn(model)
  return step(*args) if compile_it else jax.eval_shape(step, *args)


@pytest.mark.parametrize("policy", ["ftwt", "fbs_condconv"])
@pytest.mark.parametrize("name", ["mcifarnet", "vgg16_bn", "resnet56", "mobilenet_v1",
                                  "resnet18"])
def test_forward_and_gradient_under_jit(name, policy):
  (loss, (logits, state)), grads = _forward_backward(name, policy)
  assert logits.shape == (2, 10) and np.isfinite(float(loss))
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert all(np.all(np.isfinite(g)) for _, g in flat)
  backbone = [g for path, g in flat if not is_gate_param(path) and "router" not in str(path)]
  assert sum(float(jnp.abs(g).sum()) for g in backbone) > 0
  gates = [g for path, g in flat if is_gate_param(path)]
  assert len(gates) == 2 * GATES[name]  # gate / predictor kernel and bias per layer
  masks = _leaves_named(state["dynamic"], "mask")
  if policy == "ftwt":
    # Decoupled FTWT: the task loss never reaches the gates (docs/methods.md#binarisation).
    assert all(float(jnp.abs(g).max()) == 0.0 for g in gates)
  else:
    # FBS: exactly ceil(d * C) winners per example; predictors and routers learn.
    for m in masks:
      np.testing.assert_array_equal(m.sum(-1), math.ceil(0.5 * m.shape[-1]))
    assert sum(float(jnp.abs(g).sum()) for g in gates) > 0
    routers = [g for path, g in flat if "router" in str(path)]
    assert len(routers) == 2 * GATES[name]


@pytest.mark.parametrize("policy", ["ftwt", "fbs_condconv"])
@pytest.mark.parametrize("name", ["mobilenet_v1_imagenet", "resnet34"])
def test_forward_and_gradient_trace_for_deeper_variants(name, policy):
  """Same classes as mobilenet_v1 / resnet18 (compiled above); traced here."""
  (loss, (logits, _)), grads = _forward_backward(name, policy, compile_it=False)
  assert logits.shape == (2, 10) and loss.shape == ()
  assert jax.tree.structure(grads) == jax.tree.structure(
      _abstract_init(models.create(name, dynamic=POLICIES[policy], width_multiplier=TINY),
                     INPUTS[name])[1]["params"])


# ---------------------------------------------------- model-specific checks
def test_mcifarnet_real_init_dropout_and_digits_input():
  model = models.create("mcifarnet", width_multiplier=0.25)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x))(x)
  kernel = variables["params"]["conv3"]["conv"]["kernel"]  # 3x3, 32 -> 32
  # TF variance_scaling defaults: truncated normal with std sqrt(1 / fan_in).
  assert abs(float(kernel.std()) * math.sqrt(9 * 32) - 1.0) < 0.1
  assert float(jnp.abs(kernel).max()) <= 2 * math.sqrt(1 / (9 * 32)) / 0.8796 + 1e-6
  np.testing.assert_array_equal(variables["params"]["logits"]["bias"], 0.0)
  apply = jax.jit(lambda v, x, key: model.apply(
      v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])[0])
  evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
  a, b = apply(variables, x, jax.random.PRNGKey(2)), apply(variables, x, jax.random.PRNGKey(3))
  assert a.shape == (4, 10) and not np.allclose(a, b)
  np.testing.assert_array_equal(evaluate(variables, x), evaluate(variables, x))


def test_initialisers_match_their_sources():
  key = jax.random.PRNGKey(0)
  kernel = common.he_fan_out_normal(key, (3, 3, 64, 128))
  np.testing.assert_allclose(float(kernel.std()), math.sqrt(2 / (9 * 128)), rtol=0.03)
  linear = common.torch_default_kernel_init(key, (512, 1000))
  bound = 1 / math.sqrt(512)
  assert float(linear.max()) <= bound and float(linear.min()) >= -bound
  np.testing.assert_allclose(float(linear.std()), bound / math.sqrt(3), rtol=0.03)
  bias = common.torch_default_bias_init(512)(key, (1000,))
  assert float(jnp.abs(bias).max()) <= bound and float(jnp.abs(bias).max()) > 0.9 * bound


@pytest.mark.parametrize("after_residual", [False, True])
def test_resnet_block_ftwt_mask_sits_before_the_residual_add(after_residual):
  policy = Policy("ftwt", mass=0.9, mask_after_residual=after_residual)
  block = models.CifarBasicBlock(4, 1, policy)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 4))
  variables = _random_variables(jax.eval_shape(
      lambda x: block.init(jax.random.PRNGKey(1), x), x))
  params = variables["params"]
  params["conv1"]["gate"]["fc"]["bias"] = jnp.full((4,), 100.0)  # conv1: all open
  params["conv2"]["gate"]["fc"]["bias"] = jnp.array([100.0, 100.0, -100.0, -100.0])
  out = jax.jit(lambda v, x: block.apply(v, x, train=False))(variables, x)
  dense = models.CifarBasicBlock(4, 1, Policy())
  reference = jax.jit(lambda v, x: dense.apply(v, x, train=False))(
      {"params": params, "batch_stats": variables["batch_stats"]}, x)
  np.testing.assert_allclose(out[..., :2], reference[..., :2], rtol=1e-5, atol=1e-6)
  if after_residual:
    np.testing.assert_array_equal(out[..., 2:], 0.0)
  else:  # the masked channels keep the identity: ReLU(0 * BN + x)
    np.testing.assert_allclose(out[..., 2:], jax.nn.relu(x[..., 2:]), rtol=1e-6)


def test_dtype_is_the_computation_dtype_params_stay_float32():
  model = models.create("resnet18", dynamic="ftwt", width_multiplier=TINY, dtype=jnp.bfloat16)
  logits, variables = _abstract_init(model, (2, 32, 32, 3))
  assert logits.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
