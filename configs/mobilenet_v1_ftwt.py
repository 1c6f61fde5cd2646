r"""FTWT MobileNetV1 on ImageNet at r = 1, decoupled; `:baseline` = its dense run.

BEST-EFFORT RECIPE, NOT THE AUTHORS' (docs/methods.md#imagenet-recipes): see
`configs/ftwt_imagenet.py`. torchvision has no MobileNetV1, so the dense model
is trained first (`:baseline`, 150 epochs) and the FTWT run starts from its
workdir (`workdirs/ftwt_imagenet_mobilenet_v1_baseline`, or
`:init_from=<workdir>`).

  python -m dynjax.main --config=configs/mobilenet_v1_ftwt.py:baseline \
      --workdir=workdirs/ftwt_imagenet_mobilenet_v1_baseline
  python -m dynjax.main --config=configs/mobilenet_v1_ftwt.py \
      --workdir=workdirs/ftwt_imagenet_mobilenet_v1_r1

Expected runtime: ~1.5 days (baseline) + ~6 h (FTWT) on 8 A100s.
Paper: 69.57 -> 69.66 top-1 at 41.07% FLOPs reduction.
"""

from configs import ftwt_imagenet


def get_config(arg=None):
  """`configs/ftwt_imagenet.py:mobilenet_v1,1` (or `,0` for `baseline`)."""
  if arg and arg.split(",")[0] == "baseline":
    return ftwt_imagenet.get_config("mobilenet_v1,0" + arg[len("baseline"):])
  return ftwt_imagenet.get_config("mobilenet_v1,1" + (f",{arg}" if arg else ""))
