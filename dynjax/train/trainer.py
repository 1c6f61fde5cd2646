"""`train_and_evaluate(config, workdir)`: the whole run, resumable.

Loop: global batches (data position a pure function of the step) -> jitted
train step -> every `log_every_steps` metrics (one host round-trip) ->
evaluation every `eval_every_epochs` -> checkpoint every
`checkpoint_every_steps`, on preemption and at the end. A non-finite loss
stops the run before anything non-finite is saved.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dynjax.data import InputPipeline, create_source
from dynjax.data import validate as data_validate
from dynjax.errors import describe
from dynjax.train import checkpoints as ckpt_lib
from dynjax.train import metrics as metrics_lib
from dynjax.train import optim
from dynjax.train import sharding as sharding_lib
from dynjax.train.config_check import ConfigError, validate
from dynjax.train.state import TrainState, create_train_state
from dynjax.train.steps import compile_steps

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf; the message names the steps."""


def build_model(config: Any):
  """`dynjax.models.create` from the config's model fields."""
  from dynjax import models  # pylint: disable=g-import-not-at-top
  kwargs = dict(config.model_kwargs.to_dict() if hasattr(config.model_kwargs, "to_dict")
                else config.model_kwargs)
  if config.dtype == "bfloat16":
    kwargs["dtype"] = jnp.bfloat16
  try:
    return models.create(config.model, num_classes=config.num_classes,
                         dynamic=config.dynamic.to_dict(), **kwargs)
  except TypeError as e:
    raise ConfigError(f"model_kwargs: {str(e).splitlines()[0]}") from None


def _initialise_from(state: TrainState, path: str, mesh) -> TrainState:
  """Loads params / batch stats from another run or torchvision weights."""
  host = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  if path.endswith(TORCH_SUFFIXES):
    from dynjax.models.torch_convert import convert_torchvision_resnet  # pylint: disable=g-import-not-at-top
    try:
      loaded = convert_torchvision_resnet(path, host)
    except (ValueError, FileNotFoundError) as e:
      raise ConfigError(f"init_from {path!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # pylint: disable=broad-except  # unreadable file, torch missing
      raise ConfigError(f"init_from {path!r} cannot be read as a torchvision state_dict "
                        f"({describe(e)[:200]})") from e
    new = {"params": loaded["params"], "batch_stats": loaded.get("batch_stats", host["batch_stats"])}
    logging.info("Initialised from torchvision weights %s", path)
  else:
    source = ckpt_lib.load_checkpoint_variables(path)
    new = {}
    for name in ("params", "batch_stats"):
      new[name], loaded, total = ckpt_lib.merge_matching(host[name], source[name])
      logging.info("init_from %s: %d of %d %s leaves loaded", path, loaded, total, name)
      stored = len(jax.tree.leaves(source[name]))
      if name == "params" and 2 * loaded < stored:  # a dense baseline fits a gated model
        raise ConfigError(f"init_from {path!r}: only {loaded} of its {stored} parameters fit "
                          "this model (same name and shape); is it a run of another model "
                          "or width?")
  new = sharding_lib.replicate(new, mesh)
  opt_state = jax.jit(state.tx.init, out_shardings=sharding_lib.replicated(mesh))(new["params"])
  return state.replace(params=new["params"], batch_stats=new["batch_stats"], opt_state=opt_state)


def _evaluate(state, pipeline, eval_step, accumulate, mesh) -> dict[str, float]:
  sums = None
  for local in pipeline.eval_batches():
    out = eval_step(state, sharding_lib.global_batch(local, mesh))
    sums = out if sums is None else accumulate(sums, out)
  return metrics_lib.summarize_eval(sums)


def _flop_sample(pipeline: InputPipeline, max_batches: int = 4) -> np.ndarray:
  """Real (unpadded) evaluation images of this process's first batches."""
  images = []
  for i, batch in enumerate(pipeline.eval_batches()):
    if i == max_batches:
      break
    images.append(batch["image"][batch["mask"] > 0])
  return np.concatenate(images)


def _nonfinite_message(good: int, step: int, checkpointer, pipeline, num_classes: int) -> str:
  """Names the last step known finite, the checkpoint kept, and the cause: the
  batches of the failing steps are produced again and checked, so bad data is
  told apart from a diverging optimisation."""
  latest = checkpointer.latest_step()
  kept = (f"the last checkpoint (step {latest}) is kept in {checkpointer.directory}"
          if latest is not None else "no checkpoint was saved yet")
  head = (f"non-finite training loss between steps {good + 1} and {step} (finite through "
          f"step {good}); run stopped, {kept}")

  def batches():
    spe = pipeline.steps_per_epoch
    for epoch in range(good // spe, (step - 1) // spe + 1):
      start = good % spe if epoch == good // spe else 0
      for i, batch in enumerate(pipeline.train_batches(epoch, start)):
        if epoch * spe + start + i >= step:
          return
        yield epoch * spe + start + i + 1, batch

  problem = data_validate.find_bad_batch(batches(), num_classes)
  if problem:
    return f"{head}. The data is bad: {problem}; fix the dataset"
  return (f"{head}. The input data of those steps is finite with valid labels, so training "
          "diverged: lower optimizer.learning_rate or set optimizer.clip_norm")


def _mean_metrics(acc: dict[str, jax.Array], n: int) -> dict[str, float]:
  host = jax.device_get(acc)
  return {k: float(v) / n for k, v in host.items() if k != "nonfinite"}


RESULTS_FILE = "results.json"


def _write_results(workdir: str, result: dict[str, float]) -> None:
  """The final evaluation summary, machine-readable, as `workdir/results.json`."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RESULTS_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({k: float(v) for k, v in result.items()}, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)


def train_and_evaluate(config: Any, workdir: str,
                       devices: Sequence[jax.Device] | None = None, *,
                       return_state: bool = False):
  """Trains and evaluates one experiment, resuming from `workdir` if possible.

  Args:
    config: an experiment ConfigDict (see configs/default.py).
    workdir: checkpoints, `metrics.jsonl` and TensorBoard files go here.
    devices: devices of the data-parallel mesh (default: all).

  Returns:
    The final evaluation metrics (`top1`, `top5`, `loss`, `active_fraction`,
    per-layer `active/<layer>`, FTWT `ftwt_mask_accuracy`, and with
    `count_flops` the MAC summary `dense_macs`, `dynamic_macs`,
    `mac_reduction`), plus `step`. With `return_state=True`, the pair
    `(metrics, final TrainState)`.
  """
  jax.config.update("jax_threefry_partitionable", True)
  mesh = sharding_lib.create_mesh(devices)
  validate(config, device_count=mesh.devices.size, process_count=jax.process_count())
  source, pipeline = _build_input(config)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints,
                                       ckpt_lib.experiment_identity(config))
  checkpointer.check_identity()  # before any compilation
  if config.init_from and checkpointer.latest_step() is None:
    ckpt_lib.check_init_from(config.init_from)
  model = build_model(config)
  state = _initial_state(config, workdir, model, source, pipeline, mesh, checkpointer)

  writer = metrics_lib.MetricWriter(workdir)
  loop = _TrainingLoop(config, pipeline, mesh, checkpointer, writer)
  state = loop.run(state)

  eval_metrics, step = loop.eval_metrics, loop.step
  if loop.preempted:
    logging.warning("Preemption notice at step %d: checkpoint saved, stopping", step)
  elif loop.evaluated_at != step:
    eval_metrics = loop.evaluate(state)
  if config.count_flops and not loop.preempted:
    macs = metrics_lib.mac_summary(model, jax.device_get(state.variables()),
                                   _flop_sample(pipeline))
    if macs is not None:
      eval_metrics.update(macs)
      writer.write_scalars(step, {f"eval_{k}": v for k, v in macs.items()})
  checkpointer.close()
  writer.close()
  result = dict(eval_metrics, step=step)
  if jax.process_index() == 0 and not loop.preempted:
    _write_results(workdir, result)
  return (result, state) if return_state else result


def _build_input(config: Any) -> tuple[Any, InputPipeline]:
  """The checked data source and this process's input pipeline."""
  data_validate.check_dataset(config.dataset, config.num_classes)
  source = create_source(config.dataset, jax.process_index(), jax.process_count())
  try:
    pipeline = InputPipeline(source, config.dataset, config.batch_size, config.eval_batch_size,
                             config.seed, jax.process_count())
  except ValueError as e:  # e.g. batch_size larger than the training split
    raise ConfigError(" ".join(str(e).split())) from e
  return source, pipeline


def _initial_state(config: Any, workdir: str, model, source, pipeline: InputPipeline, mesh,
                   checkpointer: ckpt_lib.Checkpointer) -> TrainState:
  """A fresh state, restored from the workdir's checkpoint if there is one,
  else initialised from `config.init_from` if set."""
  steps_per_epoch = pipeline.steps_per_epoch
  tx = optim.create_optimizer(config, steps_per_epoch)
  state = create_train_state(model, tx, jax.random.PRNGKey(config.seed), source.image_shape, mesh)
  restored = checkpointer.restore(state.arrays())
  if restored is not None:
    arrays, meta = restored
    if meta.get("steps_per_epoch") != steps_per_epoch:
      raise ConfigError(f"workdir {workdir!r} was trained with {meta.get('steps_per_epoch')} "
                        f"steps per epoch, this config gives {steps_per_epoch}; use a fresh --workdir")
    state = state.with_arrays(arrays)
    logging.info("Resumed from step %d (epoch %d, step %d in epoch)", int(state.step),
                 meta["epoch"], meta["step_in_epoch"])
  elif config.init_from:
    state = _initialise_from(state, config.init_from, mesh)
  return state


class _TrainingLoop:
  """The step loop: train, log, evaluate and checkpoint on schedule.

  After `run`, `step` is the last step taken, `eval_metrics` the latest
  evaluation (taken at step `evaluated_at`, or None), and `preempted` tells
  whether a preemption notice stopped the run early.
  """

  def __init__(self, config: Any, pipeline: InputPipeline, mesh, checkpointer, writer):
    self.config = config
    self.pipeline = pipeline
    self.mesh = mesh
    self.checkpointer = checkpointer
    self.writer = writer
    self.steps_per_epoch = pipeline.steps_per_epoch
    self.total_steps = self.steps_per_epoch * config.num_epochs
    if config.max_train_steps:
      self.total_steps = min(self.total_steps, config.max_train_steps)
    self.train_step, self.eval_step, self.accumulate = compile_steps(
        config, self.steps_per_epoch, mesh)
    self.schedules = optim.learning_rates(config, self.steps_per_epoch)
    self.step = 0
    self.preempted = False
    self.eval_metrics: dict[str, float] = {}
    self.evaluated_at = None
    self._acc, self._acc_steps, self._checked_step = None, 0, 0

  def evaluate(self, state) -> dict[str, float]:
    return _evaluate(state, self.pipeline, self.eval_step, self.accumulate, self.mesh)

  def run(self, state: TrainState) -> TrainState:
    config, spe = self.config, self.steps_per_epoch
    self.step = self._checked_step = int(state.step)
    progress = metrics_lib.Progress(self.total_steps, self.step)
    self.checkpointer.watch_sigterm()
    logging.info("Training %s (%s) for %d steps, %d per epoch, on %d device(s)", config.model,
                 config.dynamic.method, self.total_steps, spe, self.mesh.devices.size)
    while self.step < self.total_steps and not self.preempted:
      epoch, start = divmod(self.step, spe)
      for local in self.pipeline.train_batches(epoch, start):
        state, step_metrics = self.train_step(state, sharding_lib.global_batch(local, self.mesh))
        self._acc = step_metrics if self._acc is None else self.accumulate(self._acc, step_metrics)
        self._acc_steps += 1
        self.step += 1
        step = self.step
        self.preempted = self.checkpointer.reached_preemption(step)
        last = step == self.total_steps
        log_now = step % config.log_every_steps == 0 or last
        save_now = step % config.checkpoint_every_steps == 0 or self.preempted or last
        if log_now or save_now:
          self._check_finite()
        if log_now:
          self._log_train(progress)
        if (step % spe == 0 and (step // spe) % config.eval_every_epochs == 0) or last:
          self.eval_metrics = self.evaluate(state)
          self.evaluated_at = step
          self.writer.write_scalars(step, {f"eval_{k}": v for k, v in self.eval_metrics.items()})
          logging.info("step %d: eval top-1 %.4f", step, self.eval_metrics["top1"])
        if save_now:
          self.checkpointer.save(step, state.arrays(), self._data_position(step))
        if self.preempted or step >= self.total_steps:
          break
    return state

  def _data_position(self, step: int) -> dict[str, int]:
    spe = self.steps_per_epoch
    return {"epoch": step // spe, "step_in_epoch": step % spe,
            "steps_per_epoch": spe, "seed": self.config.seed}

  def _check_finite(self) -> None:
    """Stops the run (before anything is saved) if a step since the last
    check had a non-finite loss."""
    if self._acc is not None and float(jax.device_get(self._acc["nonfinite"])) > 0:
      self.checkpointer.close()
      self.writer.close()
      raise NonFiniteLossError(_nonfinite_message(self._checked_step, self.step,
                                                  self.checkpointer, self.pipeline,
                                                  self.config.num_classes))
    self._checked_step = self.step

  def _log_train(self, progress) -> None:
    """Writes the mean training metrics since the last log, then resets them."""
    step = self.step
    scalars = _mean_metrics(self._acc, self._acc_steps)
    scalars.update(progress.report(step))
    scalars.update({k: float(f(step - 1)) for k, f in self.schedules.items()})
    self.writer.write_scalars(step, {f"train_{k}" if not k.endswith(("_sec", "_seconds")) else k: v
                                     for k, v in scalars.items()})
    logging.info("step %d/%d: loss %.4f, %.2f steps/s, ETA %s", step, self.total_steps,
                 scalars["loss"], scalars["steps_per_sec"],
                 metrics_lib.format_eta(scalars["eta_seconds"]))
    self._acc, self._acc_steps = None, 0
