r"""FTWT on ImageNet (ILSVRC2012): ResNet-18/34 and MobileNetV1, decoupled mode.

BEST-EFFORT RECIPE, NOT THE AUTHORS': the FTWT paper's ImageNet schedule is not
published (docs/methods.md#imagenet-recipes). This mirrors the CIFAR recipe: start from the dense
ImageNet model, backbone SGD lr 0.01 at batch 256 (momentum 0.9, wd 1e-4,
x0.1 at 1/3 and 2/3 of the run), gates SGD 0.1 constant with wd 0, BCE mask
loss for the first half (cooldown 0.5), RandomResizedCrop-224 + flip, eval
resize 256 / centre crop 224, 30 epochs.

Argument: `arch[,r][,key=value...]`, `arch` in {resnet18, resnet34,
mobilenet_v1}; `r` = 0 gives the dense baseline (only needed for MobileNetV1,
which has no torchvision weights). Keys: `batch` (global batch, default 256),
`epochs` (default 30), `init_from`.

  python -m dynjax.main --config=configs/ftwt_imagenet.py:resnet34,0.95 \
      --workdir=workdirs/ftwt_imagenet_resnet34_r0.95 \
      --config.dataset.manual_dir=<dir with the ILSVRC2012 tarballs>

`init_from` defaults: ResNets start from torchvision's ImageNet weights, the
file `pretrained/resnet18-f37072fd.pth` / `pretrained/resnet34-b627a593.pth`
(download from download.pytorch.org/models/); MobileNetV1 starts from the
workdir `workdirs/ftwt_imagenet_mobilenet_v1_baseline` of the dense run
`configs/ftwt_imagenet.py:mobilenet_v1,0` (150 epochs, SGD 0.1 cosine at
batch 256, wd 4e-5, label smoothing 0.1; also best-effort).

Batch / learning-rate scaling for TPU pods and multi-GPU hosts: the batch is
global (split over all devices and processes); `batch=B` multiplies both
learning rates by B/256 (linear scaling, Goyal et al. 2017) and, for B > 256,
adds a 2-epoch linear warm-up to the backbone. E.g. a TPU v3-32 or 8x A100:
`:resnet34,0.95,batch=1024` -> backbone lr 0.04, gate lr 0.4. Batch sizes
must divide by the device count.

Expected runtime: ~10-14 h per run on 8 A100s (30 epochs of 5,005 steps).
Paper numbers targeted (docs/methods.md#published-numbers, top-1 / FLOPs reduction):

  ResNet34 (73.30)  r=0.97 73.25/25.86% | 0.95 72.79/37.77% | 0.93 72.17/47.42%
                    0.92 71.71/52.24%
  ResNet18 (69.76)  r=0.91 67.49/51.56%
  MobileNetV1 (69.57) r=1 69.66/41.07%
"""

from configs import common
from configs import default

ARCHS = ("resnet18", "resnet34", "mobilenet_v1")
MODEL_NAMES = {"resnet18": "resnet18", "resnet34": "resnet34",
               "mobilenet_v1": "mobilenet_v1_imagenet"}
TORCHVISION_WEIGHTS = {"resnet18": "pretrained/resnet18-f37072fd.pth",
                       "resnet34": "pretrained/resnet34-b627a593.pth"}
PAPER_MASS = {"resnet18": 0.91, "resnet34": 0.95, "mobilenet_v1": 1.0}
REFERENCE_BATCH = 256


def baseline_name(arch: str) -> str:
  """Workdir name of the dense ImageNet run of `arch` (MobileNetV1 only)."""
  return f"ftwt_imagenet_{arch}_baseline"


def get_config(arg=None):
  """Returns the ImageNet run `arch[,r]` (r = 0: dense MobileNetV1 baseline)."""
  opts = common.parse_arg(arg, ("arch", "r"), dict(
      arch="resnet18", r=-1.0, batch=REFERENCE_BATCH, epochs=30, init_from=""))
  arch = common.choice("arch", opts["arch"], ARCHS)
  mass = PAPER_MASS[arch] if opts["r"] < 0 else opts["r"]
  if not 0.0 <= mass <= 1.0:
    raise ValueError(f"config argument r must be in [0, 1] (0 = baseline), got {mass}")
  if mass == 0 and arch != "mobilenet_v1":
    raise ValueError(f"config argument r=0 (a dense baseline) is only for mobilenet_v1; "
                     f"{arch} starts from torchvision weights")
  if opts["batch"] <= 0:
    raise ValueError(f"config argument batch must be a positive integer, got {opts['batch']}")
  scale = opts["batch"] / REFERENCE_BATCH

  config = default.get_config()
  config.model = MODEL_NAMES[arch]
  config.model_kwargs = dict(width_multiplier=1.0)
  config.num_classes = 1000
  config.dataset.name = "imagenet2012"
  config.dataset.image_size = 224
  config.dataset.eval_split = "validation"
  config.batch_size = opts["batch"]
  config.eval_batch_size = opts["batch"]
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 200

  if mass == 0:  # dense MobileNetV1 trained from scratch
    config.num_epochs = 150
    config.optimizer = default.optimizer_config(
        name="sgd", learning_rate=0.1 * scale, momentum=0.9, nesterov=True,
        weight_decay=4e-5, schedule="cosine", schedule_unit="step",
        warmup_epochs=5 if scale > 1 else 0)
    config.loss.label_smoothing = 0.1
    return config

  epochs = opts["epochs"]
  config.num_epochs = epochs
  config.dynamic.method = "ftwt"
  config.dynamic.mass = mass
  config.dynamic.mode = "decoupled"
  config.dynamic.target = "mass"
  config.optimizer = default.optimizer_config(
      name="sgd", learning_rate=0.01 * scale, momentum=0.9, weight_decay=1e-4,
      schedule="step", schedule_unit="epoch",
      milestones=(epochs // 3, 2 * epochs // 3), decay_factor=0.1,
      warmup_epochs=2 if scale > 1 else 0)
  config.gate_optimizer = default.optimizer_config(
      name="sgd", learning_rate=0.1 * scale, momentum=0.9, weight_decay=0.0,
      schedule="constant")
  config.loss.ftwt_mask_weight = 1.0
  config.loss.ftwt_cooldown = 0.5
  config.init_from = opts["init_from"] or TORCHVISION_WEIGHTS.get(
      arch, common.baseline_workdir(baseline_name(arch)))
  return config
