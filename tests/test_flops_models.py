"""Dense closed forms of the model zoo and the seed's Table 1 (trace only)."""

import jax
import jax.numpy as jnp
import pytest

from dynjax import flops, models
from dynjax.flops import __main__ as cli


def dense_report(name, size, num_classes=10, **kw):
  model = models.create(name, num_classes=num_classes, **kw)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return flops.count_dense(model.apply, jax.eval_shape(model.init, jax.random.PRNGKey(0), x), x)


def conv(hw, k, cin, cout, groups=1):
  return hw * hw * k * k * cin // groups * cout


def resnet_imagenet(blocks):
  total = conv(112, 7, 3, 64)  # stem
  hw, cin = 56, 64
  for stage, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
    for b in range(n):
      stride = 2 if stage > 0 and b == 0 else 1
      hw_out = hw // stride
      total += conv(hw_out, 3, cin, width) + conv(hw_out, 3, width, width)
      if stride == 2 or cin != width:
        total += conv(hw_out, 1, cin, width)  # projection shortcut
      hw, cin = hw_out, width
  return total + 512 * 1000


def mobilenet(stem_hw, cfg, num_classes):
  total, hw, cin = conv(stem_hw, 3, 3, 32), stem_hw, 32
  for cout, stride in cfg:
    hw //= stride
    total += conv(hw, 3, cin, cin, cin) + conv(hw, 1, cin, cout)
    cin = cout
  return total + 1024 * num_classes


MOBILENET_CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
    (1024, 2), (1024, 1)]

CIFAR_VGG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16():
  total, hw, cin = 0, 32, 3
  for v in CIFAR_VGG:
    if v == "M":
      hw //= 2
    else:
      total, cin = total + conv(hw, 3, cin, v), v
  return total + 512 * 10


def resnet56():
  total, cin = conv(32, 3, 3, 16), 16
  for stage, width in enumerate((16, 32, 64)):
    hw = 32 >> stage
    total += 9 * (conv(hw, 3, width, width) * 2) - conv(hw, 3, width, width) + conv(hw, 3, cin, width)
    cin = width
  return total + 64 * 10


@pytest.mark.parametrize("name,size,classes,expected", [
    ("resnet18", 224, 1000, resnet_imagenet((2, 2, 2, 2))),
    ("resnet34", 224, 1000, resnet_imagenet((3, 4, 6, 3))),
    ("mobilenet_v1_imagenet", 224, 1000, mobilenet(112, MOBILENET_CFG, 1000)),
    ("mobilenet_v1", 32, 10, mobilenet(32, MOBILENET_CFG, 10)),
    ("vgg16_bn", 32, 10, vgg16()),
    ("resnet56", 32, 10, resnet56()),
    ("mcifarnet", 32, 10, 174_301_824),
])
def test_dense_zoo_matches_closed_form(name, size, classes, expected):
  report = dense_report(name, size, classes)
  assert report.dense_macs == expected
  assert report.unknown_primitives == {}


def test_published_totals():
  """Cross-check with the numbers the specs quote (docs/methods.md#counting-macs, #m-cifarnet)."""
  assert resnet56() == 125_485_056 + 640
  assert vgg16() == 313_196_544 + 5_120
  assert mobilenet(32, MOBILENET_CFG, 10) == 46_344_192 + 10_240
  mc = dense_report("mcifarnet", 32)
  assert [r.dense_macs for r in mc.rows] == [1_555_200, 33_177_600, 16_588_800, 33_177_600,
                                             33_177_600, 14_155_776, 21_233_664, 21_233_664,
                                             1_920]


@pytest.mark.parametrize("density,table", [(1.0, 174.3), (0.9, 145.5), (0.7, 88.3), (0.5, 45.3),
                                           (0.3, 16.5), (0.25, 11.5)])
def test_fbs_condconv_table1(density, table):
  report = dense_report("mcifarnet", 32, dynamic=dict(method="fbs", density=density, experts=4))
  paper = report.under("fbs_condconv_paper", density=density)
  assert abs(paper.macs_mean / 1e6 - table) < 0.05
  assert paper.dense_macs == 174_301_824
  assert sum(r.gated for r in paper.rows) == 8


def test_cli_prints_the_table(tmp_path, capsys):
  config = tmp_path / "tiny.py"
  config.write_text(
      "import ml_collections\n"
      "def get_config():\n"
      "  c = ml_collections.ConfigDict()\n"
      "  c.model = 'mcifarnet'\n  c.num_classes = 10\n"
      "  c.dynamic = dict(method='fbs', density=0.5, experts=4)\n"
      "  c.model_kwargs = dict(width_multiplier=0.25)\n  c.input_shape = (8, 8, 3)\n"
      "  return c\n")
  text = cli.main([f"--config={config}", "--batch", "2", "--dense",
                   "--convention", "fbs_condconv_paper"])
  assert "conv7/conv" in text and "fbs_condconv_paper" in text
  with pytest.raises(ValueError, match="missing field"):
    cli.model_from_config({"model": "mcifarnet"})
