"""End-to-end training on the offline digits (8 fake CPU devices): checkpoints,
exact resume, 8-vs-1-device equality, non-finite stop, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from dynjax.train import ConfigError, NonFiniteLossError, train_and_evaluate
from dynjax.train import checkpoints as ckpt_lib
from dynjax.train import optim, sharding, steps
from dynjax.train.state import create_train_state
from dynjax.train.trainer import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**changes):
  """M-CifarNet at 1/16 width (4-12 channels) with FTWT gates, 16-example batches."""
  config = default.get_config()
  config.model = "mcifarnet"
  config.model_kwargs = {"width_multiplier": 0.0625}
  config.dynamic.method = "ftwt"
  config.dynamic.mass = 0.9
  config.gate_optimizer = default.optimizer_config(learning_rate=0.1, momentum=0.9)
  config.optimizer = default.optimizer_config(learning_rate=0.05, weight_decay=5e-4,
                                              schedule="cosine")
  config.batch_size = 16
  config.eval_batch_size = 128
  config.num_epochs = 2
  config.max_train_steps = 4
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  config.count_flops = False
  for key, value in changes.items():
    node = config
    *parents, last = key.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  return config


pytestmark = pytest.mark.usefixtures("fast_cpu_compiles")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Run A: 4 steps straight. Run B: 2 steps, stop, resume to 4."""
  root = tmp_path_factory.mktemp("runs")
  workdir_a, workdir_b = str(root / "a"), str(root / "b")
  result_a = train_and_evaluate(tiny_config(count_flops=True), workdir_a)
  result_b1 = train_and_evaluate(tiny_config(max_train_steps=2), workdir_b)
  result_b2 = train_and_evaluate(tiny_config(), workdir_b)
  return dict(a=workdir_a, b=workdir_b, result_a=result_a, result_b1=result_b1,
              result_b2=result_b2, root=root)


def test_end_to_end_writes_checkpoints_metrics_and_evaluates(runs):
  result = runs["result_a"]
  assert result["step"] == 4
  assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
  assert 0.0 <= result["ftwt_mask_accuracy"] <= 1.0
  active = [k for k in result if k.startswith("active/")]
  assert len(active) == 8 and 0.0 <= result["active_fraction"] <= 1.0
  assert result["dense_macs"] > 0 and result["dynamic_macs"] <= result["dense_macs"]
  np.testing.assert_allclose(result["mac_reduction"],
                             1 - result["dynamic_macs"] / result["dense_macs"], rtol=1e-6)
  steps_saved = sorted(int(d) for d in os.listdir(os.path.join(runs["a"], "checkpoints"))
                       if d.isdigit())
  assert steps_saved == [2, 4]
  with open(os.path.join(runs["a"], "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  train_lines = [l for l in lines if "train_loss" in l]
  assert [l["step"] for l in train_lines] == [2, 4]
  assert {"train_ftwt_mask_loss", "steps_per_sec", "eta_seconds", "train_learning_rate",
          "train_gate_learning_rate"} <= set(train_lines[0])
  assert any("eval_top1" in l for l in lines)
  with open(os.path.join(runs["a"], "results.json")) as f:
    final = json.load(f)
  assert final["step"] == 4 and final["top1"] == result["top1"]
  assert final["mac_reduction"] == result["mac_reduction"]


def test_interrupted_and_resumed_run_equals_uninterrupted(runs):
  assert runs["result_b1"]["step"] == 2 and runs["result_b2"]["step"] == 4
  a = ckpt_lib.load_checkpoint_variables(runs["a"])
  b = ckpt_lib.load_checkpoint_variables(runs["b"])
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)
  np.testing.assert_allclose(runs["result_a"]["top1"], runs["result_b2"]["top1"])


def test_workdir_of_another_experiment_is_refused(runs):
  with pytest.raises(ConfigError, match=r"another experiment \(dynamic:") as err:
    train_and_evaluate(tiny_config(**{"dynamic.mass": 0.8}), runs["a"])
  assert "\n" not in str(err.value)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(runs):
  workdir = str(runs["root"] / "nan")
  shutil.copytree(runs["a"], workdir)
  config = tiny_config(max_train_steps=6)
  config.optimizer.learning_rate = 1e38  # finite (config_check refuses inf), overflows in one step
  with pytest.raises(NonFiniteLossError, match="non-finite training loss between steps 5 and 6"):
    train_and_evaluate(config, workdir)
  steps_saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                       if d.isdigit())
  assert steps_saved == [2, 4]


def test_one_step_on_eight_devices_equals_one_device():
  config = tiny_config()
  model = build_model(config)
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
           "label": rng.integers(0, 10, 16).astype(np.int32)}
  results = []
  for devices in (jax.devices()[:8], jax.devices()[:1]):
    mesh = sharding.create_mesh(devices)
    tx = optim.create_optimizer(config, steps_per_epoch=93)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 1), mesh)
    train_step, _, _ = steps.compile_steps(config, 93, mesh)
    state, metrics = train_step(state, sharding.global_batch(batch, mesh))
    results.append(jax.device_get((state.params, state.batch_stats, metrics)))
  assert len(jax.devices()) == 8
  for x, y in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_global_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  with pytest.raises(ConfigError, match=r"batch_size \(12\) must be divisible by the number "
                                        r"of devices \(8\)"):
    train_and_evaluate(tiny_config(batch_size=12), str(tmp_path))
  mesh = sharding.create_mesh()
  with pytest.raises(ValueError, match="divisible by the number of devices"):
    sharding.global_batch({"image": np.zeros((12, 2), np.float32)}, mesh)


@pytest.mark.parametrize("change,pattern", [
    ({"dynamic.density": 0.0}, r"dynamic.density \(d\) must be in \(0, 1\]"),
    ({"dynamic.density": 1.5}, r"dynamic.density \(d\) must be in \(0, 1\]"),
    ({"dynamic.mass": 0.0}, r"dynamic.mass \(r\) must be in \(0, 1\]"),
    ({"dynamic.mass": 1.2}, r"dynamic.mass \(r\) must be in \(0, 1\]"),
    ({"model": "resnet99"}, r"model must be one of \[.*'mcifarnet'.*\], got 'resnet99'"),
    ({"dynamic.method": "prune"}, r"dynamic.method must be one of \['dense', 'static', 'fbs', 'ftwt'"),
    ({"dataset.name": "mnist"}, r"dataset.name must be one of \['digits', 'npz', 'cifar10'"),
    ({"optimizer.name": "adam"}, r"optimizer.name must be one of \['sgd', 'rmsprop'\]"),
    ({"dtype": "float16"}, r"dtype must be one of \['float32', 'bfloat16'\]"),
    ({"learning_rat": 0.1}, r"unknown config key\(s\) \['learning_rat'\]; allowed"),
    ({"optimizer.lr": 0.1}, r"unknown config key\(s\) \['optimizer.lr'\]"),
    ({"dynamic.densty": 0.5}, r"unknown config key\(s\) \['dynamic.densty'\]"),
])
def test_bad_input_is_one_line_error_naming_the_field(tmp_path, change, pattern):
  with pytest.raises(ConfigError, match=pattern) as err:
    train_and_evaluate(tiny_config(**change), str(tmp_path))
  assert "\n" not in str(err.value)


def test_merge_matching_loads_matching_leaves_only():
  target = {"conv0": {"kernel": np.zeros((2, 3)), "gate": {"w": np.ones(4)}},
            "logits": {"kernel": np.zeros((3, 10))}}
  source = {"conv0": {"kernel": np.full((2, 3), 7.0)}, "logits": {"kernel": np.ones((3, 5))}}
  merged, loaded, total = ckpt_lib.merge_matching(target, source)
  assert (loaded, total) == (1, 3)
  np.testing.assert_array_equal(merged["conv0"]["kernel"], 7.0)
  np.testing.assert_array_equal(merged["conv0"]["gate"]["w"], 1.0)   # kept (gate)
  np.testing.assert_array_equal(merged["logits"]["kernel"], 0.0)     # shape differs


def test_sigterm_is_a_preemption_notice(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), 1, {})
  checkpointer.watch_sigterm()
  assert not checkpointer.reached_preemption(1)
  os.kill(os.getpid(), signal.SIGTERM)
  assert checkpointer.reached_preemption(2)
  checkpointer.close()


@pytest.mark.slow
def test_command_line_error_is_one_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "dynjax.main", "--config=configs/quickstart.py",
       f"--workdir={tmp_path}", "--config.dynamic.density=1.5"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: dynamic.density (d) must be in (0, 1], got 1.5")
