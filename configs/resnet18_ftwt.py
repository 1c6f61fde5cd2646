r"""FTWT ResNet-18 on ImageNet at r = 0.91, decoupled (the FTWT ImageNet row).

BEST-EFFORT RECIPE, NOT THE AUTHORS' (docs/methods.md#imagenet-recipes): see
`configs/ftwt_imagenet.py` for the recipe, the batch / learning-rate scaling
and the argument keys (`batch`, `epochs`, `init_from`, `r`).

  python -m dynjax.main --config=configs/resnet18_ftwt.py \
      --workdir=workdirs/ftwt_imagenet_resnet18_r0.91 \
      --config.dataset.manual_dir=<dir with the ILSVRC2012 tarballs>

Starts from torchvision's ResNet-18 weights (`pretrained/resnet18-f37072fd.pth`
by default, or `:init_from=<file.pth>`). Expected runtime: ~8 h on 8 A100s
(30 epochs). Paper: 69.76 -> 67.49 top-1 at 51.56% FLOPs reduction.
"""

from configs import ftwt_imagenet


def get_config(arg=None):
  """`configs/ftwt_imagenet.py:resnet18,0.91` plus any extra `key=value`s."""
  return ftwt_imagenet.get_config("resnet18,r=0.91" + (f",{arg}" if arg else ""))
