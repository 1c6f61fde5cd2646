"""Print the per-layer MAC table of a config's model.

  python -m dynjax.flops --config=configs/quickstart.py [--batch 8] [--convention exact]

The config is an `ml_collections` file with `get_config()` (a `file.py:arg`
suffix is passed to it) giving at least `model`, `num_classes`, `dynamic`
and optionally `model_kwargs` and the input size (`input_shape`,
`image_size`, or `dataset.name` / `dataset.image_size`). The model is
initialised at random and counted on a random normal batch (gated layers then
gate as an untrained network would); `--dense` counts from the trace only.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from dynjax import config_loading
from dynjax.errors import UserError

DATASET_SHAPES = {"digits": (8, 8, 1), "cifar10": (32, 32, 3), "cifar100": (32, 32, 3)}


def load_config(spec: str):
  """`get_config()` of `file.py[:arg]` (the loader `dynjax.main` uses)."""
  return config_loading.load_config(spec)


def input_shape(config) -> tuple:
  """One example's shape `(H, W, C)` from the config."""
  get = lambda c, k: c.get(k) if hasattr(c, "get") else getattr(c, k, None)
  if get(config, "input_shape"):
    return tuple(get(config, "input_shape"))
  size = get(config, "image_size")
  dataset = get(config, "dataset")
  name = get(dataset, "name") if dataset is not None else None
  if size is None and dataset is not None:
    size = get(dataset, "image_size")
  if name in DATASET_SHAPES and size is None:
    return DATASET_SHAPES[name]
  if size is not None or (name or "").startswith("imagenet"):
    return (size or 224, size or 224, 3)
  raise ValueError("config needs input_shape, image_size or dataset.name "
                   f"(one of {sorted(DATASET_SHAPES)} or imagenet*) to size the input")


def model_from_config(config):
  from dynjax import models
  missing = [k for k in ("model", "num_classes") if k not in config]
  if missing:
    raise ValueError(f"config is missing field(s) {missing}")
  kwargs = dict(config.get("model_kwargs") or {})
  dynamic = config.get("dynamic")
  return models.create(config.model, num_classes=config.num_classes, dynamic=dynamic, **kwargs)


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(prog="python -m dynjax.flops", description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True, help="config file, optionally file.py:arg")
  parser.add_argument("--batch", type=int, default=8, help="examples to count on")
  parser.add_argument("--convention", default="exact",
                      help="exact, fbs_condconv_paper (uses dynamic.density) or ftwt_code")
  parser.add_argument("--dense", action="store_true", help="trace only, no execution")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  from dynjax import flops
  config = load_config(args.config)
  model = model_from_config(config)
  shape = (args.batch,) + input_shape(config)
  key_init, key_x = jax.random.split(jax.random.PRNGKey(args.seed))
  variables = jax.jit(model.init)(key_init, jnp.zeros(shape, jnp.float32))
  x = (jax.ShapeDtypeStruct(shape, jnp.float32) if args.dense
       else jax.random.normal(key_x, shape, jnp.float32))
  report = flops.Counter(model.apply)(variables, x, train=False)
  params = {}
  if args.convention == "fbs_condconv_paper":
    params["density"] = float((config.get("dynamic") or {}).get("density", 1.0))
  if args.convention != "exact":
    report = report.under(args.convention, **params)
  text = f"model {config.model}, input {shape}\n{report}"
  print(text)
  return text


if __name__ == "__main__":
  try:
    main()
  except UserError as e:
    sys.exit(f"error: {e}")
