"""torchvision ResNet state_dict -> dynjax: logits equal PyTorch's.

torchvision itself is not required: the reference below is a small torch.nn
ResNet whose modules carry torchvision's exact names (conv1, bn1, layer1.0.
conv1, ..., downsample.0/1, fc), so its state_dict keys are the real ones.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynjax import models
from dynjax.models.torch_convert import convert_torchvision_resnet, load_state_dict

torch = pytest.importorskip("torch")
tnn = torch.nn

WIDTH = 1 / 8  # 8, 16, 32, 64 channels: same keys, small compile
STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("fast_cpu_compiles")


class TorchBasicBlock(tnn.Module):
  """torchvision.models.resnet.BasicBlock's structure and names."""

  def __init__(self, inplanes, planes, stride=1):
    super().__init__()
    self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(planes)
    self.relu = tnn.ReLU(inplace=True)
    self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                       tnn.BatchNorm2d(planes))

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class TorchResNet(tnn.Module):
  """torchvision.models.resnet.ResNet (basic blocks) with scalable widths."""

  def __init__(self, stage_sizes, num_classes, widths):
    super().__init__()
    self.conv1 = tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    self.bn1 = tnn.BatchNorm2d(widths[0])
    self.relu = tnn.ReLU(inplace=True)
    self.maxpool = tnn.MaxPool2d(3, 2, 1)
    inplanes = widths[0]
    for stage, (blocks, planes) in enumerate(zip(stage_sizes, widths)):
      layer = []
      for b in range(blocks):
        layer.append(TorchBasicBlock(inplanes, planes, 2 if stage > 0 and b == 0 else 1))
        inplanes = planes
      setattr(self, f"layer{stage + 1}", tnn.Sequential(*layer))
    self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
    self.fc = tnn.Linear(widths[-1], num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


def _torch_model(name, seed=0):
  torch.manual_seed(seed)
  widths = [max(1, round(c * WIDTH)) for c in (64, 128, 256, 512)]
  model = TorchResNet(STAGES[name], NUM_CLASSES, widths)
  with torch.no_grad():  # non-trivial BN so the statistics mapping is tested
    for module in model.modules():
      if isinstance(module, tnn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.3, 0.3)
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 2.0)
  return model.eval()


@pytest.fixture(scope="module")
def inputs():
  x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
  return x, jnp.asarray(x.transpose(0, 2, 3, 1))


def _init(name, x, dynamic=None):
  """The model and stand-in "fresh" variables.

  Random values of the right shapes from an abstract init: compiling the real
  initialisers costs more than everything else here, and the converter only
  needs shapes plus values it must leave alone.
  """
  model = models.create(name, num_classes=NUM_CLASSES, dynamic=dynamic, width_multiplier=WIDTH)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(1), x, train=False), x)
  rng = np.random.default_rng(1)
  return model, jax.tree.map(
      lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), shapes)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_converted_logits_equal_torch(name, inputs):
  x_nchw, x = inputs
  reference = _torch_model(name)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x_nchw)).numpy()
  model, variables = _init(name, x)
  converted = convert_torchvision_resnet(reference.state_dict(), variables)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(converted, x)
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
  # The freshly initialised variables are left as they were.
  assert not np.allclose(variables["params"]["fc"]["bias"], converted["params"]["fc"]["bias"])


def test_pth_file_and_numpy_dict_give_the_same_variables(inputs, tmp_path):
  _, x = inputs
  reference = _torch_model("resnet18")
  wrapped = {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()},
             "epoch": 3}
  path = tmp_path / "resnet18.pth"
  torch.save(wrapped, path)
  numpy_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  assert set(load_state_dict(path)) == {k for k in numpy_dict if "num_batches" not in k}
  _, variables = _init("resnet18", x)
  from_file = convert_torchvision_resnet(str(path), variables)
  from_numpy = convert_torchvision_resnet(numpy_dict, variables)
  jax.tree.map(np.testing.assert_array_equal, from_file, from_numpy)
  np.testing.assert_array_equal(
      from_numpy["params"]["layer2_0"]["downsample_conv"]["kernel"],
      numpy_dict["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(from_numpy["batch_stats"]["layer3_1"]["conv2"]["bn"]["var"],
                                numpy_dict["layer3.1.bn2.running_var"])


def test_ftwt_model_keeps_gates_and_equals_torch_when_all_gates_open(inputs):
  x_nchw, x = inputs
  reference = _torch_model("resnet18", seed=1)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x_nchw)).numpy()
  model, variables = _init("resnet18", x, dynamic=dict(method="ftwt", mass=0.9))
  converted = convert_torchvision_resnet(reference.state_dict(), variables)
  gate = lambda v: v["params"]["layer2_1"]["conv1"]["gate"]
  jax.tree.map(np.testing.assert_array_equal, gate(converted), gate(variables))
  # Gate biases of +100 switch every channel on: the FTWT network is then the
  # dense torchvision network exactly.
  opened = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 100.0 if "gate" in str(path) and "bias" in str(path) else v,
      converted)
  logits, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["dynamic"]))(
      opened, x)
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
  assert float(state["dynamic"]["layer4_1"]["conv2"]["mask"].min()) == 1.0


def test_fbs_condconv_takes_bias_as_beta_and_copies_experts(inputs):
  _, x = inputs
  reference = _torch_model("resnet18")
  sd = {k: v.numpy() for k, v in reference.state_dict().items()}
  _, variables = _init("resnet18", x, dynamic=dict(method="fbs", density=0.5, experts=2))
  converted = convert_torchvision_resnet(sd, variables)
  layer = converted["params"]["layer1_1"]["conv2"]
  np.testing.assert_array_equal(layer["beta"], sd["layer1.1.bn2.bias"])
  kernel = sd["layer1.1.conv2.weight"].transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(layer["conv"]["experts"], np.stack([kernel, kernel]))
  jax.tree.map(np.testing.assert_array_equal, layer["conv"]["router"],
               variables["params"]["layer1_1"]["conv2"]["conv"]["router"])
  jax.tree.map(np.testing.assert_array_equal, layer["predictor"],
               variables["params"]["layer1_1"]["conv2"]["predictor"])
  np.testing.assert_array_equal(converted["batch_stats"]["stem"]["bn"]["mean"],
                                sd["bn1.running_mean"])


def test_errors_name_the_offending_key(inputs):
  _, x = inputs
  sd18 = {k: v.numpy() for k, v in _torch_model("resnet18").state_dict().items()}
  sd34 = {k: v.numpy() for k, v in _torch_model("resnet34").state_dict().items()}
  _, variables = _init("resnet18", x)
  missing = dict(sd18)
  del missing["layer4.1.bn2.running_var"]
  with pytest.raises(ValueError, match=r"layer4\.1\.bn2\.running_var"):
    convert_torchvision_resnet(missing, variables)
  with pytest.raises(ValueError, match=r"layer1\.2\.|has no place"):
    convert_torchvision_resnet(sd34, variables)
  _, static = _init("resnet18", x, dynamic=dict(method="static", density=0.5))
  with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*shape"):
    convert_torchvision_resnet(sd18, static)
  with pytest.raises(ValueError, match="resnet18"):
    convert_torchvision_resnet(sd18, {"params": {}})
