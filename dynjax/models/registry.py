"""The model registry: `create(name, num_classes, dynamic, **kw)` and helpers.

  >>> model = create("mcifarnet", dynamic=dict(method="fbs", density=0.3, experts=4))
  >>> variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  >>> gated_layers(model, (1, 32, 32, 3))[:2]
  ['conv0', 'conv1']
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dynjax.layers.dynamic_conv import DYNAMIC
from dynjax.layers.policy import Policy
from dynjax.models.mcifarnet import MCifarNet
from dynjax.models.mobilenet import MobileNetV1
from dynjax.models.resnet import RESNET_STAGE_SIZES, ResNet
from dynjax.models.resnet_cifar import CifarResNet
from dynjax.models.vgg import VGG, VGG16_CFG


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered network: its module class and the fields the name fixes."""

  cls: type
  fixed: dict


# Gated layers: mcifarnet 8, vgg16_bn 13, resnet56 55, resnet20 19, mobilenet_v1(_imagenet)
# 27, resnet18 17, resnet34 33.
_MODELS: dict[str, ModelSpec] = {
    "mcifarnet": ModelSpec(MCifarNet, {}),
    "vgg16_bn": ModelSpec(VGG, {"cfg": VGG16_CFG}),
    "resnet56": ModelSpec(CifarResNet, {"blocks_per_stage": 9}),
    "resnet20": ModelSpec(CifarResNet, {"blocks_per_stage": 3}),
    "mobilenet_v1": ModelSpec(MobileNetV1, {"variant": "cifar"}),
    "mobilenet_v1_imagenet": ModelSpec(MobileNetV1, {"variant": "imagenet"}),
    "resnet18": ModelSpec(ResNet, {"stage_sizes": RESNET_STAGE_SIZES["resnet18"]}),
    "resnet34": ModelSpec(ResNet, {"stage_sizes": RESNET_STAGE_SIZES["resnet34"]}),
}

# Module dataclass fields that are Flax plumbing, not model options.
_FLAX_FIELDS = ("parent", "name")


def list_models() -> list[str]:
  """Names accepted by `create`."""
  return list(_MODELS)


def model_options(name: str) -> list[str]:
  """The keyword arguments `create(name, ...)` accepts besides the fixed ones."""
  spec = _spec(name)
  fields = [f.name for f in dataclasses.fields(spec.cls) if f.init]
  return [f for f in fields if f not in _FLAX_FIELDS and f not in spec.fixed]


def create(name: str, num_classes: int = 10, dynamic: Any = None, **kw) -> nn.Module:
  """Build a registered network.

  Args:
    name: one of `list_models()`.
    num_classes: logits size.
    dynamic: the gating policy, anything `Policy.create` accepts (a `Policy`,
      dict, ConfigDict, method name, or None for dense).
    **kw: model options, e.g. `width_multiplier`, `dtype`; see
      `model_options(name)`. MobileNet's ImageNet variant is its own name,
      `mobilenet_v1_imagenet`; `resnet18` / `resnet34` fix `stage_sizes`.

  Returns:
    A Flax Linen module; `model.apply(variables, x, train=...)` maps
    `x: [N, H, W, C]` (NHWC float) to logits `[N, num_classes]`.

  Raises:
    ValueError: unknown name, bad policy, or a bad option value.
    TypeError: an option the model does not have.
  """
  spec = _spec(name)
  allowed = model_options(name)
  unknown = sorted(set(kw) - set(allowed))
  if unknown:
    raise TypeError(f"create({name!r}) got unknown option(s) {unknown}; "
                    f"allowed: {sorted(set(allowed) - {'num_classes', 'dynamic'})}")
  if not (isinstance(num_classes, int) and num_classes >= 1):
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
  if "width_multiplier" in kw and not kw["width_multiplier"] > 0:
    raise ValueError(f"width_multiplier must be > 0, got {kw['width_multiplier']!r}")
  return spec.cls(num_classes=num_classes, dynamic=Policy.create(dynamic),
                  **spec.fixed, **kw)


def gated_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
  """Module paths (e.g. `"layer1_0/conv1"`) of the layers that record masks.

  Computed by one abstract `init` (`jax.eval_shape`, no compilation), in
  execution order.

  Args:
    model: any Flax module whose gated layers sow `mask` into `"dynamic"`.
    input_shape: `[N, H, W, C]` of an example input.
  """
  paths: list[str] = []

  def trace(x):
    variables = model.init({"params": jax.random.PRNGKey(0),
                            "dropout": jax.random.PRNGKey(1)}, x, train=False)
    paths.extend(_mask_paths(variables.get(DYNAMIC, {}), ()))
    return x.sum()

  jax.eval_shape(trace, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
  return paths


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays (or `ShapeDtypeStruct`s)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _mask_paths(tree, prefix: tuple[str, ...]) -> list[str]:
  found = []
  for key, value in tree.items():
    if key == "mask" and not isinstance(value, dict):
      found.append("/".join(prefix))
    elif isinstance(value, dict) or hasattr(value, "items"):
      found.extend(_mask_paths(value, prefix + (key,)))
  return found


def _spec(name: str) -> ModelSpec:
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; allowed: {list_models()}")
  return _MODELS[name]
