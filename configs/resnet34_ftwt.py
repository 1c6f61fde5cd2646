r"""FTWT ResNet-34 on ImageNet, decoupled, at r = 0.97 / 0.95 / 0.93 / 0.92.

BEST-EFFORT RECIPE, NOT THE AUTHORS' (docs/methods.md#imagenet-recipes): see
`configs/ftwt_imagenet.py` for the recipe, the batch / learning-rate scaling
and the argument keys. Argument: `r[,key=value...]` (default r = 0.95).

  python -m dynjax.main --config=configs/resnet34_ftwt.py:0.93 \
      --workdir=workdirs/ftwt_imagenet_resnet34_r0.93 \
      --config.dataset.manual_dir=<dir with the ILSVRC2012 tarballs>

Starts from torchvision's ResNet-34 weights (`pretrained/resnet34-b627a593.pth`).
Expected runtime: ~12 h on 8 A100s (30 epochs). Paper (baseline 73.30):
r=0.97 73.25 / 25.86% | 0.95 72.79 / 37.77% | 0.93 72.17 / 47.42% |
0.92 71.71 / 52.24% (top-1 / FLOPs reduction).
"""

from configs import ftwt_imagenet


def get_config(arg=None):
  """`configs/ftwt_imagenet.py:resnet34,<r>`."""
  return ftwt_imagenet.get_config("resnet34" + (f",{arg}" if arg else ",0.95"))
