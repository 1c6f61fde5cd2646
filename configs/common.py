"""Helpers shared by the paper-experiment configs (not a config itself).

Every experiment config starts from `configs/default.py::get_config()` and
changes only what its recipe states; the helpers here hold the pieces several
recipes share: the `file.py:arg` parser and the CIFAR-10 data settings.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import ml_collections


# Where the sweep runners put their workdirs by default (relative to the
# repository root, the directory the commands are run from).
WORKDIR_ROOT = "workdirs"


def parse_arg(arg: str | None, positional: Sequence[str],
              defaults: Mapping[str, Any]) -> dict[str, Any]:
  """Parses a config argument such as `vgg16_bn,0.92,joint` or `d=0.5,init_from=x`.

  Comma-separated items; an item `key=value` sets `key`, a bare item fills the
  next name of `positional`. Values take the type of their default (bool from
  `true/false/1/0`; a default of None keeps the string).

  Args:
    arg: the text after `:` in `--config=file.py:arg` (None or "" = defaults).
    positional: names that bare items fill, in order.
    defaults: every accepted name and its default value.

  Returns:
    A dict with one value per name of `defaults`.

  Raises:
    ValueError: an unknown name, too many bare items or a bad value.
  """
  values = dict(defaults)
  bare = list(positional)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    if "=" in item:
      key, text = (s.strip() for s in item.split("=", 1))
    elif bare:
      key, text = bare.pop(0), item
    else:
      raise ValueError(f"config argument {arg!r}: too many positional items; use "
                       f"key=value with keys {sorted(defaults)}")
    if key not in defaults:
      raise ValueError(f"config argument key {key!r} must be one of {sorted(defaults)}")
    if key in positional and key in bare:
      bare.remove(key)
    values[key] = _convert(key, text, defaults[key])
  return values


def _convert(key: str, text: str, like: Any) -> Any:
  try:
    if isinstance(like, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(like, int):
      return int(text)
    if isinstance(like, float):
      return float(text)
  except ValueError:
    raise ValueError(f"config argument {key}={text!r} must be a {type(like).__name__}") from None
  return text


def choice(key: str, value: str, allowed: Sequence[str]) -> str:
  """Returns `value` if allowed, else raises a one-line ValueError."""
  if value not in allowed:
    raise ValueError(f"config argument {key} must be one of {list(allowed)}, got {value!r}")
  return value


def use_cifar10(config: ml_collections.ConfigDict, cutout: int = 0) -> None:
  """CIFAR-10 from tfds, 4-pixel pad-and-crop and flips (both papers' augmentation).

  For a local copy as arrays, override on the command line:
  `--config.dataset.name=npz --config.dataset.path=<file.npz>`.
  """
  config.dataset.name = "cifar10"
  config.dataset.crop_padding = 4
  config.dataset.flip = True
  config.dataset.cutout = cutout
  config.num_classes = 10


def baseline_workdir(name: str) -> str:
  """Default workdir of the dense run a fine-tuning config starts from."""
  return f"{WORKDIR_ROOT}/{name}"
