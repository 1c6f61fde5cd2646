"""Every paper-experiment config loads with each of its arguments and validates."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from configs import common  # noqa: E402
from dynjax import models  # noqa: E402
from dynjax.train import config_check  # noqa: E402
from experiments import macs, paper_numbers, sweeps  # noqa: E402

EXTRA_VARIANTS = [
    ("configs/ftwt_cifar.py", None),
    ("configs/ftwt_cifar.py", "arch=resnet56,r=0.8,mode=decoupled,init_from=/ckpt/r56"),
    ("configs/fbs_condconv.py", None),
    ("configs/fbs_condconv.py", "scp_condconv,d=0.25"),
    ("configs/ftwt_imagenet.py", "resnet34,0.92,batch=1024,epochs=90"),
    ("configs/resnet18_ftwt.py", None),
    ("configs/resnet34_ftwt.py", None),
    ("configs/resnet34_ftwt.py", "0.97"),
    ("configs/mobilenet_v1_ftwt.py", None),
    ("configs/mobilenet_v1_ftwt.py", "baseline"),
    ("configs/bernoulli_gate.py", None),
    ("configs/bernoulli_gate.py", "mcifarnet,0.3,weight=2,temperature=0.5"),
]


def _all_variants():
  seen = []
  for name in sweeps.SWEEPS:
    for job in sweeps.get_sweep(name):
      if (job.config, job.arg) not in seen:
        seen.append((job.config, job.arg))
  return seen + [v for v in EXTRA_VARIANTS if v not in seen]


@pytest.mark.parametrize("path,arg", _all_variants())
def test_config_loads_validates_and_builds(path, arg):
  config = macs.load_config(os.path.join(ROOT, path), arg)
  model = models.create(config.model, num_classes=config.num_classes,
                        dynamic=config.dynamic.to_dict(), **config.model_kwargs.to_dict())
  assert model.num_classes == config.num_classes
  config_check.validate(config)


def test_every_config_file_is_covered():
  files = {f"configs/{f}" for f in os.listdir(os.path.join(ROOT, "configs"))
           if f.endswith(".py") and f not in ("default.py", "quickstart.py", "common.py",
                                               "__init__.py")}
  assert files <= {path for path, _ in _all_variants()}


def test_ftwt_cifar_recipe():
  base = macs.load_config(f"{ROOT}/configs/ftwt_cifar.py", "resnet56")
  assert base.dynamic.method == "dense" and base.init_from is None
  assert (base.num_epochs, base.batch_size) == (200, 128)
  assert base.optimizer.learning_rate == 0.1 and base.optimizer.weight_decay == 5e-4
  assert tuple(base.optimizer.milestones) == (81, 122, 151)
  dyn = macs.load_config(f"{ROOT}/configs/ftwt_cifar.py", "resnet56,0.8,decoupled")
  assert (dyn.dynamic.method, dyn.dynamic.mass, dyn.dynamic.mode) == ("ftwt", 0.8, "decoupled")
  assert dyn.optimizer.learning_rate == 0.01
  assert (dyn.gate_optimizer.name, dyn.gate_optimizer.learning_rate,
          dyn.gate_optimizer.weight_decay, dyn.gate_optimizer.schedule) == ("sgd", 0.1, 0.0,
                                                                           "constant")
  assert dyn.loss.ftwt_cooldown == 0.5
  assert dyn.init_from == "workdirs/ftwt_cifar_resnet56_baseline"


def test_fbs_condconv_recipe():
  config = macs.load_config(f"{ROOT}/configs/fbs_condconv.py", "fbs_condconv,0.3")
  assert (config.dynamic.method, config.dynamic.density, config.dynamic.experts) == ("fbs", 0.3, 4)
  assert config.model_kwargs.activation == "swish" and config.dataset.cutout == 18
  opt = config.optimizer
  assert (opt.name, opt.learning_rate, opt.schedule, opt.weight_decay, opt.weight_decay_mode,
          opt.clip_norm, opt.rmsprop_eps) == ("rmsprop", 0.01, "cosine", 1e-4, "l2_loss", 5.0, 1.0)
  assert (config.batch_size, config.num_epochs, config.loss.fbs_lasso) == (256, 480, 1e-8)
  scp = macs.load_config(f"{ROOT}/configs/fbs_condconv.py", "scp,0.5")
  assert (scp.dynamic.method, scp.dynamic.experts) == ("static", 0)


def test_imagenet_batch_scaling():
  config = macs.load_config(f"{ROOT}/configs/resnet34_ftwt.py", "0.93,batch=1024")
  assert config.batch_size == 1024 and config.dynamic.mass == 0.93
  assert config.optimizer.learning_rate == pytest.approx(0.04)
  assert config.gate_optimizer.learning_rate == pytest.approx(0.4)
  assert config.optimizer.warmup_epochs == 2
  assert tuple(config.optimizer.milestones) == (10, 20)
  assert config.init_from.endswith("resnet34-b627a593.pth")


def test_path_fields_accept_command_line_overrides():
  from dynjax.config_loading import load_config  # the loader `dynjax.main` uses
  config = load_config(f"{ROOT}/configs/fbs_condconv.py:fbs,0.5",
                       [("dataset.name", "npz"), ("dataset.path", "/x/y.npz"),
                        ("init_from", "/a/b"), ("optimizer.milestones", "(1,2,)")])
  assert config.dataset.path == "/x/y.npz"
  assert config.init_from == "/a/b"
  assert tuple(config.optimizer.milestones) == (1, 2)


@pytest.mark.parametrize("arg,expected", [
    ("vgg16_bn,0.92,joint", dict(arch="vgg16_bn", r=0.92, mode="joint", init_from="")),
    ("r=0.5,arch=resnet56", dict(arch="resnet56", r=0.5, mode="decoupled", init_from="")),
    ("mobilenet_v1,init_from=/a,1", dict(arch="mobilenet_v1", r=1.0, mode="decoupled",
                                         init_from="/a")),
    (None, dict(arch="vgg16_bn", r=0.0, mode="decoupled", init_from="")),
])
def test_parse_arg(arg, expected):
  defaults = dict(arch="vgg16_bn", r=0.0, mode="decoupled", init_from="")
  assert common.parse_arg(arg, ("arch", "r", "mode"), defaults) == expected


@pytest.mark.parametrize("path,arg,message", [
    ("configs/ftwt_cifar.py", "vgg19", "arch must be one of"),
    ("configs/ftwt_cifar.py", "vgg16_bn,0.9,both", "mode must be one of"),
    ("configs/ftwt_cifar.py", "vgg16_bn,x", "r='x' must be a float"),
    ("configs/ftwt_cifar.py", "vgg16_bn,lr=3", "key 'lr' must be one of"),
    ("configs/fbs_condconv.py", "fbs,1.5", "d must be in (0, 1]"),
    ("configs/ftwt_imagenet.py", "resnet18,0", "only for mobilenet_v1"),
])
def test_bad_arguments_fail_with_one_line(path, arg, message):
  with pytest.raises(ValueError, match=None) as info:
    macs.load_config(os.path.join(ROOT, path), arg)
  assert message in str(info.value) and "\n" not in str(info.value)


def test_every_paper_row_has_a_job():
  names = {j.name for j in sweeps.get_sweep("ftwt_cifar10")}
  for arch, r, mode in paper_numbers.FTWT_CIFAR10:
    suffix = "baseline" if mode == "baseline" else f"r{r:g}_{mode}"
    assert f"ftwt_cifar_{arch}_{suffix}" in names
  imagenet = {(j.config, j.arg) for j in sweeps.get_sweep("ftwt_imagenet")}
  for arch, r in paper_numbers.FTWT_IMAGENET:
    assert ("configs/ftwt_imagenet.py", f"{arch},{r:g}") in imagenet
  seed = {j.arg for j in sweeps.get_sweep("fbs_condconv")}
  for method, row in paper_numbers.SEED_TABLE2.items():
    for d in row:
      assert f"{method},{d:g}" in seed
  assert "dense" in seed
