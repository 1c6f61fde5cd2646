"""dynjax: dynamic channel pruning and conditional computation for JAX/Flax.

Submodules are imported lazily so `import dynjax` stays cheap:
`dynjax.layers`, `dynjax.models`, `dynjax.flops`, `dynjax.train`, `dynjax.data`.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("layers", "models", "flops", "train", "data", "sparse")


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"dynjax.{name}")
  raise AttributeError(f"module 'dynjax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
