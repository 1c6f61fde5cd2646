"""Pod-style training: 2 real JAX processes x 2 CPU devices over loopback.

One launch of `tests/multiprocess_driver.py` under `dynjax.launch_local`
trains a tiny quickstart config for a few steps; the checks compare it with a
1-process run fed the same global batches, check the data split and the
evaluation count, and restore the 2-process checkpoint in 1 process.
"""

import io
import json
import os
import sys

import jax
import numpy as np
import pytest

from dynjax import launch_local
from dynjax.data import InputPipeline, create_source
from dynjax.train import optim, sharding, train_and_evaluate
from dynjax.train.state import create_train_state
from dynjax.train.steps import compile_steps
from dynjax.train.trainer import build_model

sys.path.insert(0, os.path.dirname(__file__))
import multiprocess_driver as driver  # pylint: disable=wrong-import-position

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

STEPS = 4


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  workdir, out_dir = root / "workdir", root / "out"
  out_dir.mkdir()
  log = io.StringIO()
  code = launch_local.launch(
      [sys.executable, driver.__file__, str(workdir), str(out_dir), str(STEPS)],
      num_processes=2, devices_per_process=2, timeout=400, sink=log)
  assert code == 0, log.getvalue()[-3000:]
  return workdir, out_dir, log.getvalue()


def _load(out_dir, name, index):
  path = out_dir / f"{name}_p{index}"
  if name == "params":
    return dict(np.load(f"{path}.npz"))
  if name == "result":
    return json.loads((out_dir / f"result_p{index}.json").read_text())
  return np.load(f"{path}.npy")


def _reference_params(config, steps):
  """The same training on 1 process with 4 devices, fed the same global batches."""
  mesh = sharding.create_mesh(jax.devices()[:4])
  pipelines = [InputPipeline(create_source(config.dataset, i, 2), config.dataset,
                             config.batch_size, config.eval_batch_size, config.seed, 2)
               for i in range(2)]
  steps_per_epoch = pipelines[0].steps_per_epoch
  model = build_model(config)
  tx = optim.create_optimizer(config, steps_per_epoch)
  state = create_train_state(model, tx, jax.random.PRNGKey(config.seed),
                             create_source(config.dataset).image_shape, mesh)
  train_step, _, _ = compile_steps(config, steps_per_epoch, mesh)
  streams = [p.train_batches(0) for p in pipelines]
  for _ in range(steps):
    local = [next(s) for s in streams]  # process 0's rows first, as the mesh orders them
    batch = {k: jax.device_put(np.concatenate([b[k] for b in local]), sharding.batch_sharding(mesh))
             for k in local[0]}
    state, _ = train_step(state, batch)
  return driver.flat_params(state.params)


def test_processes_end_with_identical_parameters_equal_to_one_process(two_process_run):
  _, out_dir, log = two_process_run
  assert "[p0] process 0 done at step 4" in log and "[p1] process 1 done at step 4" in log
  p0, p1 = _load(out_dir, "params", 0), _load(out_dir, "params", 1)
  assert p0.keys() == p1.keys() and p0
  for name in p0:
    np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
  reference = _reference_params(driver.tiny_config(STEPS), STEPS)
  assert reference.keys() == p0.keys()
  for name in p0:
    np.testing.assert_allclose(p0[name], reference[name], rtol=2e-5, atol=2e-6, err_msg=name)


def test_processes_read_disjoint_shares_covering_the_data(two_process_run):
  _, out_dir, _ = two_process_run
  shares = [_load(out_dir, "examples", i) for i in range(2)]
  whole = driver.fingerprints(create_source(driver.tiny_config(STEPS).dataset))
  assert len(shares[0]) == len(shares[1]) == len(whole) // 2
  assert not set(shares[0]) & set(shares[1])
  combined = np.concatenate(shares)
  assert len(set(combined)) == len(combined)           # no duplicates
  assert set(combined) == set(whole)                   # the whole training set


def test_evaluation_counts_every_example_once(two_process_run):
  _, out_dir, _ = two_process_run
  results = [_load(out_dir, "result", i) for i in range(2)]
  assert results[0]["eval_examples"] == results[1]["eval_examples"] == 297
  assert results[0]["top1"] == results[1]["top1"]


def test_one_checkpoint_per_step_for_the_job(two_process_run):
  workdir, _, _ = two_process_run
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert steps == [2, 4]


def test_two_process_checkpoint_restores_in_one_process(two_process_run, caplog):
  workdir, out_dir, _ = two_process_run
  config = driver.tiny_config(STEPS + 2)
  with caplog.at_level("INFO"):
    result, state = train_and_evaluate(config, str(workdir), devices=jax.devices()[:2],
                                       return_state=True)
  assert "Resumed from step 4" in caplog.text
  assert result["step"] == STEPS + 2 and int(state.step) == STEPS + 2
