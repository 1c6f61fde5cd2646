r"""FTWT on CIFAR-10: dense baselines and every dynamic row of the FTWT table.

Recipes: docs/methods.md#training-recipes (baseline and dynamic), after the official scripts
`job_baseline.sh` / `job_dynamic.sh`. Argument: `arch[,r,mode][,key=value...]`.

  # Dense baseline (200 epochs, SGD 0.1, wd 5e-4, x0.1 at 81/122/151):
  python -m dynjax.main --config=configs/ftwt_cifar.py:vgg16_bn \
      --workdir=workdirs/ftwt_cifar_vgg16_bn_baseline
  # Dynamic run from that baseline (backbone lr 1e-2, gates SGD 0.1 constant,
  # wd 0, BCE mask loss switched off after epoch 100):
  python -m dynjax.main --config=configs/ftwt_cifar.py:vgg16_bn,0.92,joint \
      --workdir=workdirs/ftwt_cifar_vgg16_bn_r0.92_joint
  # Another baseline location:
  #   --config=configs/ftwt_cifar.py:resnet56,0.8,decoupled,init_from=/ckpts/r56

Keys: `arch` in {vgg16_bn, resnet56, mobilenet_v1, resnet20}; `r` (target mass, 0 = the
dense baseline); `mode` in {decoupled, joint}; `init_from` (default
`workdirs/ftwt_cifar_<arch>_baseline`, the workdir of the baseline run).

Expected runtime: one GPU, ~1-3 h per run (200 epochs of 391 steps); CPU is
impractical beyond a few epochs. Paper numbers targeted (docs/methods.md#published-numbers, top-1 /
FLOPs reduction by the FTWT-code accounting):

  vgg16_bn     baseline 93.82 | 0.92 joint 93.55 / 65% | 0.92 decoupled 93.73 / 56%
               0.85 decoupled 93.19 / 73% | 0.88 joint 92.65 / 74%
  resnet56     baseline 93.66 | 0.80 decoupled 92.63 / 66% | 0.88 joint 92.28 / 54%
  mobilenet_v1 baseline 90.89 | 1.00 decoupled 91.06 / 78% | 1.00 joint 91.21 / 78%

Deviations: BN statistics over the whole batch of 128 (the original used
DataParallel shards of 32); the model is the final epoch's, not the best test
epoch (the sweep collector reports both).
"""

from configs import common
from configs import default

# resnet20 has no row in the paper; the CPU study uses it in place of ResNet-56.
ARCHS = ("vgg16_bn", "resnet56", "mobilenet_v1", "resnet20")
MODES = ("decoupled", "joint")


def baseline_name(arch: str) -> str:
  """Workdir name of the dense baseline of `arch`."""
  return f"ftwt_cifar_{arch}_baseline"


def get_config(arg=None):
  """Returns the run for `arch[,r,mode]` (r = 0: the dense baseline)."""
  opts = common.parse_arg(arg, ("arch", "r", "mode"),
                          dict(arch="vgg16_bn", r=0.0, mode="decoupled", init_from=""))
  arch = common.choice("arch", opts["arch"], ARCHS)
  mode = common.choice("mode", opts["mode"], MODES)
  if not 0.0 <= opts["r"] <= 1.0:
    raise ValueError(f"config argument r must be in [0, 1] (0 = baseline), got {opts['r']}")

  config = default.get_config()
  config.model = arch
  config.model_kwargs = dict(width_multiplier=1.0)
  common.use_cifar10(config)
  config.batch_size = 128
  config.eval_batch_size = 128
  config.num_epochs = 200
  config.optimizer = default.optimizer_config(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
      weight_decay_mode="coupled", schedule="step", schedule_unit="epoch",
      milestones=(81, 122, 151), decay_factor=0.1)
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 100

  if opts["r"] > 0:
    config.dynamic.method = "ftwt"
    config.dynamic.mass = opts["r"]
    config.dynamic.mode = mode
    config.dynamic.target = "mass"
    config.optimizer.learning_rate = 0.01
    config.gate_optimizer = default.optimizer_config(
        name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.0,
        schedule="constant")
    config.loss.ftwt_mask_weight = 1.0
    config.loss.ftwt_cooldown = 0.5
    config.init_from = opts["init_from"] or common.baseline_workdir(baseline_name(arch))
  return config
