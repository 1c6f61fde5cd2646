r"""The regularised Bernoulli channel gate (docs/methods.md#bernoulli-gate)
beside the FTWT and FBS rows it is meant to be compared with.

Argument: `arch[,d][,key=value...]`: `arch` in {mcifarnet, vgg16_bn}, `d` the
target activation rate (default 0.5); keys `weight` (the rate penalty,
default 5.0), `temperature` (Gumbel-sigmoid tau, default 2/3).

  python -m dynjax.main --config=configs/bernoulli_gate.py:vgg16_bn,0.5 \
      --workdir=workdirs/bernoulli_vgg16_bn_d0.5
  python -m dynjax.main --config=configs/bernoulli_gate.py:mcifarnet,0.3 \
      --workdir=workdirs/bernoulli_mcifarnet_d0.3

Recipes: VGG-16-BN is fine-tuned from its dense baseline with exactly the
FTWT CIFAR dynamic recipe (`configs/ftwt_cifar.py`: 200 epochs, backbone SGD
0.01 step schedule, gate heads SGD 0.1 constant, `init_from` the baseline
workdir), so a Bernoulli row differs from an FTWT row only in the gate and
its loss. M-CifarNet is trained from scratch with the FBS-pruned CondConv
recipe (`configs/fbs_condconv.py`: RMSProp, 480 epochs, Cutout), so its rows
sit beside the FBS and SCP rows at the same d. The FTWT paper argues that
gates trained through the task loss plus a rate penalty need per-model
tuning of that penalty; sweeping `weight` here is how to test it.
"""

from configs import common
from configs import fbs_condconv
from configs import ftwt_cifar

ARCHS = ("mcifarnet", "vgg16_bn")


def get_config(arg=None):
  """Returns the Bernoulli-gate run `arch[,d]`."""
  opts = common.parse_arg(arg, ("arch", "d"),
                          dict(arch="vgg16_bn", d=0.5, weight=5.0, temperature=2.0 / 3.0,
                               init_from=""))
  arch = common.choice("arch", opts["arch"], ARCHS)
  if not 0.0 < opts["d"] <= 1.0:
    raise ValueError(f"config argument d must be in (0, 1], got {opts['d']}")
  if arch == "vgg16_bn":
    spec = "vgg16_bn,0.9" + (f",init_from={opts['init_from']}" if opts["init_from"] else "")
    config = ftwt_cifar.get_config(spec)
  else:
    config = fbs_condconv.get_config("fbs")
  config.dynamic.method = "bernoulli"
  config.dynamic.density = opts["d"]
  config.dynamic.mass = 1.0
  config.dynamic.options = {"temperature": float(opts["temperature"])}
  config.loss.bernoulli_rate_weight = float(opts["weight"])
  return config
