"""Recount a finished job's MACs in its paper's convention (`macs.json`).

The trainer records MACs in dynjax's exact convention on one evaluation
batch. The papers use their own accounting (docs/methods.md#counting-macs: the
seed's Table 1 and the FTWT code), so the collector recounts with
`dynjax.flops` under `fbs_condconv_paper` (M-CifarNet rows, at the job's
density) or `ftwt_code` (FTWT rows, on the trained weights and the whole test
split) and caches the result in `workdir/macs.json`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from dynjax import config_loading
from experiments import results as results_lib
from experiments import sweeps

# Examples counted for input-independent policies (dense, static, FBS).
INPUT_INDEPENDENT_EXAMPLES = 8


def load_config(config_path: str, arg: str, overrides: Sequence[tuple[str, str]] = ()):
  """`get_config(arg)` of a config file with `--config.key=value` overrides
  applied, exactly as `python -m dynjax.main` does (`dynjax.config_loading`)."""
  spec = config_path if arg is None else f"{config_path}:{arg}"
  return config_loading.load_config(spec, overrides)


def convention_for(config) -> tuple[str, dict]:
  """The published convention of a job and its parameters."""
  if config.dynamic.method == "ftwt" or config.model != "mcifarnet":
    return "ftwt_code", {}
  density = config.dynamic.density if config.dynamic.method != "dense" else 1.0
  return "fbs_condconv_paper", {"density": float(density)}


def recount(config, workdir: str, max_examples: int = 512) -> dict:
  """Counts the job's MACs per example in its paper's convention.

  Dense, static and FBS layers cost the same for every input, so a few
  examples through the fresh model suffice; FTWT is counted on the trained
  weights over up to `max_examples` test examples. A static (SCP) network's
  baseline is the full-width dense network, not itself.

  Returns:
    `{"convention", "params", "macs", "dense_macs", "examples"}` (MACs per
    example).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dynjax import flops  # pylint: disable=g-import-not-at-top
  from dynjax.data import InputPipeline, create_source  # pylint: disable=g-import-not-at-top
  from dynjax.train import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  from dynjax.train.trainer import build_model  # pylint: disable=g-import-not-at-top

  convention, params = convention_for(config)
  model = build_model(config)
  source = create_source(config.dataset)
  pipeline = InputPipeline(source, config.dataset, config.batch_size, config.eval_batch_size,
                           config.seed, 1)
  variables = ckpt_lib.load_checkpoint_variables(workdir) if config.dynamic.method == "ftwt" \
      else None
  fn = None
  total, dense, seen = 0.0, 0.0, 0
  for batch in pipeline.eval_batches():
    images = np.asarray(batch["image"])
    if "mask" in batch:  # padded final batch
      images = images[np.asarray(batch["mask"]).astype(bool)]
    if config.dynamic.method != "ftwt":
      images = images[:INPUT_INDEPENDENT_EXAMPLES]
    if variables is None:
      variables = model.init(jax.random.PRNGKey(0), images[:1], train=False)
    if fn is None:
      def fn(x):
        return model.apply(variables, x, train=False, mutable=["dynamic"])[0]
    report = flops.count(fn, images).under(convention, **params)
    total += float(np.sum(report.macs_per_example))
    dense = report.dense_macs
    seen += images.shape[0]
    if config.dynamic.method != "ftwt" or seen >= max_examples:
      break
  macs = total / max(seen, 1)
  if convention == "ftwt_code" and config.dynamic.method in ("dense", "static"):
    # The FTWT code counts gated convs only; an ungated network (the dense
    # baseline, a static width) costs its dense count, `args.macs` there.
    macs = dense
  if config.dynamic.method == "static":
    dense = _full_width_dense_macs(config, images, convention)
  return {"convention": convention, "params": params, "macs": macs,
          "dense_macs": dense, "examples": seen}


def _full_width_dense_macs(config, images, convention: str) -> float:
  """Dense MACs per example of the config's network without pruning or experts."""
  import jax  # pylint: disable=g-import-not-at-top
  from dynjax import flops  # pylint: disable=g-import-not-at-top
  from dynjax.train.trainer import build_model  # pylint: disable=g-import-not-at-top
  dense_config = config.copy_and_resolve_references()
  dense_config.dynamic.method = "dense"
  dense_config.dynamic.experts = 0
  model = build_model(dense_config)
  variables = model.init(jax.random.PRNGKey(0), images[:1], train=False)
  report = flops.count(lambda x: model.apply(variables, x, train=False), images)
  params = {"density": 1.0} if convention == "fbs_condconv_paper" else {}
  return report.under(convention, **params).dense_macs


def recount_job(job: sweeps.Job, workdir_root: str, data: str | None = None,
                force: bool = False) -> dict | None:
  """Recounts one finished job into `workdir/macs.json` (cached)."""
  from experiments import run as run_lib  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(workdir_root, job.name)
  path = os.path.join(workdir, results_lib.MACS_FILE)
  if os.path.exists(path) and not force:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  if results_lib.read_job(workdir).status != "done":
    return None
  overrides = run_lib.job_overrides(job, workdir_root, data)
  config = load_config(job.config, job.arg, overrides)
  counted = recount(config, workdir)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(counted, f, indent=1)
  return counted
