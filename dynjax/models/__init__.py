"""The model zoo: every network written once in `DynamicConv` blocks.

`create(name, num_classes=10, dynamic=None, **kw)` builds any of
`list_models()` for any gating policy (dense, fbs, ftwt, static, with or
without CondConv experts).
"""

from dynjax.models.mcifarnet import MCifarNet
from dynjax.models.mobilenet import DepthwiseSeparable, MobileNetV1
from dynjax.models.registry import (count_params, create, gated_layers, list_models,
                                    model_options)
from dynjax.models.resnet import BasicBlock, ResNet
from dynjax.models.resnet_cifar import CifarBasicBlock, CifarResNet, option_a_shortcut
from dynjax.models.torch_convert import convert_torchvision_resnet
from dynjax.models.vgg import VGG

__all__ = [
    "BasicBlock", "CifarBasicBlock", "CifarResNet", "DepthwiseSeparable", "MCifarNet",
    "MobileNetV1", "ResNet", "VGG", "convert_torchvision_resnet", "count_params",
    "create", "gated_layers", "list_models", "model_options", "option_a_shortcut",
]
