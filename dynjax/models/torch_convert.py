"""torchvision ResNet-18/34 `state_dict` -> dynjax `resnet18` / `resnet34` variables.

FTWT's ImageNet runs start from torchvision's pretrained ResNets. This fills a
freshly initialised dynjax model (built with any gating policy) with the dense
weights; gate heads (`gate`, `predictor`) and CondConv routers keep their
initial values.

  torchvision key                         dynjax variable
  conv1.weight [O, I, kh, kw]             params/stem/conv/kernel [kh, kw, I, O]
  bn1.weight, bn1.bias                    params/stem/bn/scale, bias
  bn1.running_mean, running_var           batch_stats/stem/bn/mean, var
  layer{s}.{b}.conv{k}.weight, .bn{k}.*   layer{s}_{b}/conv{k}/conv, /bn
  layer{s}.{b}.downsample.0.weight        params/layer{s}_{b}/downsample_conv/kernel
  layer{s}.{b}.downsample.1.*             layer{s}_{b}/downsample_bn
  fc.weight [classes, 512], fc.bias       params/fc/kernel [512, classes], bias

Per policy:
- dense, ftwt: exact (the converted dense model reproduces torchvision's
  logits in eval mode).
- fbs: BN has no affine part (the saliency g replaces gamma,
  docs/methods.md#where-the-fbs-gate-sits), so `bn.weight` is dropped and
  `bn.bias` becomes the layer's `beta`.
- CondConv (`experts > 0`): every expert gets a copy of the dense kernel, so
  the mixed kernel is (sum_i alpha_i) * W until fine-tuning adapts it.
- static: widths differ from torchvision's, so conversion fails with a
  shape error.

`num_batches_tracked` entries are ignored and a leading `module.`
(DataParallel) is stripped. Any other missing, unexpected or mis-shaped key
raises `ValueError`. torch is imported only to read a `.pth` file.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np
import jax.numpy as jnp
from flax.core import unfreeze

_BLOCK_NAME = re.compile(r"layer(\d+)_(\d+)$")


def load_state_dict(source: Any) -> dict[str, np.ndarray]:
  """A torch `state_dict` as numpy arrays.

  Args:
    source: path of a `.pth` file (a state_dict, or a checkpoint dict holding
      one under "state_dict"), or a mapping of name -> tensor / array.
  """
  if isinstance(source, (str, os.PathLike)):
    import torch  # optional dependency, only needed for .pth files
    source = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
  if not isinstance(source, Mapping):
    raise TypeError(f"expected a state_dict mapping or a .pth path, got {type(source).__name__}")
  if isinstance(source.get("state_dict"), Mapping):
    source = source["state_dict"]
  arrays = {}
  for key, value in source.items():
    key = key[len("module."):] if key.startswith("module.") else key
    if key.endswith("num_batches_tracked"):
      continue
    if hasattr(value, "detach"):  # a torch tensor
      value = value.detach().cpu().numpy()
    arrays[key] = np.asarray(value)
  return arrays


class _Filler:
  """Copies state_dict entries into nested variable dicts, checking shapes."""

  def __init__(self, state: dict[str, np.ndarray], variables: dict):
    self.state = state
    self.variables = variables
    self.used: set[str] = set()

  def take(self, key: str) -> np.ndarray:
    if key not in self.state:
      raise ValueError(f"state_dict has no {key!r}, needed by this model")
    self.used.add(key)
    return self.state[key]

  def put(self, path: tuple[str, ...], value: np.ndarray, key: str) -> None:
    node = self.variables
    for name in path[:-1]:
      node = node[name]
    current = node[path[-1]]
    if tuple(value.shape) != tuple(current.shape):
      raise ValueError(f"state_dict {key!r} gives shape {tuple(value.shape)} for "
                       f"{'/'.join(path)}, which has shape {tuple(current.shape)}")
    node[path[-1]] = jnp.asarray(value, dtype=current.dtype)

  def batch_norm(self, torch_prefix: str, path: tuple[str, ...], beta_path=None) -> None:
    """BN at `path`; `beta_path` receives the bias when BN has no affine part."""
    bn = _lookup(self.variables["params"], path[:-1]).get(path[-1], {})  # none in FBS
    weight, bias = self.take(f"{torch_prefix}.weight"), self.take(f"{torch_prefix}.bias")
    if "scale" in bn:
      self.put(("params",) + path + ("scale",), weight, f"{torch_prefix}.weight")
      self.put(("params",) + path + ("bias",), bias, f"{torch_prefix}.bias")
    elif beta_path is not None:
      self.put(("params",) + beta_path, bias, f"{torch_prefix}.bias")
    for torch_name, name in (("running_mean", "mean"), ("running_var", "var")):
      key = f"{torch_prefix}.{torch_name}"
      self.put(("batch_stats",) + path + (name,), self.take(key), key)

  def conv_kernel(self, key: str, path: tuple[str, ...]) -> None:
    """Plain conv `path/kernel` or CondConv `path/experts` from an OIHW weight."""
    kernel = np.transpose(self.take(key), (2, 3, 1, 0))  # OIHW -> HWIO
    conv = _lookup(self.variables["params"], path)
    if "experts" in conv:
      experts = conv["experts"]
      if tuple(kernel.shape) != tuple(experts.shape[1:]):
        raise ValueError(f"state_dict {key!r} gives shape {kernel.shape} for "
                         f"{'/'.join(path)}, whose experts are {tuple(experts.shape[1:])}")
      kernel = np.broadcast_to(kernel, experts.shape)
      self.put(("params",) + path + ("experts",), kernel, key)
    else:
      self.put(("params",) + path + ("kernel",), kernel, key)

  def dynamic_conv(self, conv_prefix: str, bn_prefix: str, path: tuple[str, ...]) -> None:
    self.conv_kernel(f"{conv_prefix}.weight", path + ("conv",))
    self.batch_norm(bn_prefix, path + ("bn",), beta_path=path + ("beta",))


def convert_torchvision_resnet(state_dict_or_path: Any, variables: Mapping) -> dict:
  """Fill dynjax ResNet-18/34 variables from a torchvision `state_dict`.

  Args:
    state_dict_or_path: a `.pth` path or a mapping of torchvision names to
      tensors / numpy arrays (see `load_state_dict`).
    variables: `model.init(...)` output of `create("resnet18" | "resnet34",
      num_classes=..., dynamic=...)`, with "params" and "batch_stats".

  Returns:
    New variables (the input is not modified): backbone, BN statistics and fc
    from the state_dict; gate and router parameters and any other collection
    as given.

  Raises:
    ValueError: a key is missing or unexpected, or a shape does not match.
  """
  state = load_state_dict(state_dict_or_path)
  variables = unfreeze(variables)
  params = variables.get("params", {})
  if "stem" not in params or "fc" not in params or "batch_stats" not in variables:
    raise ValueError("variables must come from create('resnet18'|'resnet34').init(...) "
                     "and contain params/stem, params/fc and batch_stats")
  filler = _Filler(state, variables)
  filler.dynamic_conv("conv1", "bn1", ("stem",))
  for name in params:
    match = _BLOCK_NAME.match(name)
    if not match:
      continue
    prefix = f"layer{match.group(1)}.{match.group(2)}"
    for k in (1, 2):
      filler.dynamic_conv(f"{prefix}.conv{k}", f"{prefix}.bn{k}", (name, f"conv{k}"))
    if "downsample_conv" in params[name]:
      filler.put(("params", name, "downsample_conv", "kernel"),
                 np.transpose(filler.take(f"{prefix}.downsample.0.weight"), (2, 3, 1, 0)),
                 f"{prefix}.downsample.0.weight")
      filler.batch_norm(f"{prefix}.downsample.1", (name, "downsample_bn"))
  filler.put(("params", "fc", "kernel"), filler.take("fc.weight").T, "fc.weight")
  filler.put(("params", "fc", "bias"), filler.take("fc.bias"), "fc.bias")
  unexpected = sorted(set(state) - filler.used)
  if unexpected:
    raise ValueError(f"state_dict has {len(unexpected)} key(s) this model has no place for, "
                     f"e.g. {unexpected[:4]} (ResNet-34 weights into a ResNet-18?)")
  return variables


def _lookup(tree: Mapping, path: tuple[str, ...]):
  for name in path:
    if name not in tree:
      raise ValueError(f"variables have no {'/'.join(path)}; expected a dynjax torchvision-"
                       "layout ResNet")
    tree = tree[name]
  return tree
