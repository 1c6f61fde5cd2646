"""Nothing a user mistypes ends in a traceback; nothing damaged on disk loses a run.

Table-driven: each bad input goes through `python -m dynjax.main` with the
quickstart config and must end with exit status 1 and exactly one `error:`
line on stderr, naming the field or file. Config mistakes are caught before
JAX is imported (a fraction of a second each), data and path mistakes before
anything is compiled. Plus: random overrides (hypothesis) either validate or
fail with one line; a damaged latest checkpoint is set aside and the run
resumes exactly from the previous one; a process killed mid-save leaves the
previous checkpoint intact.
"""

import concurrent.futures
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dynjax import config_loading
from dynjax.data import validate as data_validate
from dynjax.errors import UserError
from dynjax.train import ConfigError, train_and_evaluate
from dynjax.train import checkpoints as ckpt_lib
from dynjax.train.config_check import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.py")
# absl's log line prefix (`I1203 17:29:01.613600 1398... file.py:12] ...`).
LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def _write_npz_files(root):
  """Small digits-like npz files, one per data mistake (8x8x1, 10 classes)."""
  rng = np.random.default_rng(0)
  x = rng.random((64, 8, 8, 1)).astype(np.float32)
  y = np.arange(64) % 10
  files = {"no_y_test": dict(x_train=x, y_train=y, x_test=x[:16]),
           "lengths": dict(x_train=x, y_train=y[:60], x_test=x[:16], y_test=y[:16])}
  label = y.copy()
  label[37] = 12
  files["label12"] = dict(x_train=x, y_train=label, x_test=x[:16], y_test=y[:16])
  nan = x.copy()
  nan[5, 1, 1, 0] = np.nan
  files["nan"] = dict(x_train=nan, y_train=y, x_test=x[:16], y_test=y[:16])
  files["ok"] = dict(x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])
  for name, arrays in files.items():
    np.savez(os.path.join(root, f"{name}.npz"), **arrays)
  with open(os.path.join(root, "text.npz"), "w") as f:
    f.write("not an archive\n")
  with open(os.path.join(root, "broken_config.py"), "w") as f:
    f.write("def get_config(:\n")
  with open(os.path.join(root, "a_file"), "w") as f:
    f.write("x")


# (case id, extra arguments ({root}: a temporary directory), expected error pattern)
CASES = [
    # The table.
    ("typo_in_key", ["--config.dynamic.densty=0.5"],
     r"--config.dynamic.densty: config.dynamic has no field 'densty'; did you mean 'density'"),
    ("wrong_path", ["--config.model.dynamic.density=0.5"],
     r"--config.model.dynamic.density: config.model is a str \('mcifarnet'\), not a group"),
    ("no_such_key", ["--config.learning_rate=abc"],
     r"config has no field 'learning_rate'; did you mean --config.optimizer.learning_rate"),
    ("wrong_type", ["--config.num_epochs=abc"],
     r"--config.num_epochs: expected an integer, got 'abc'"),
    ("density_range", ["--config.dynamic.density=1.7"],
     r"dynamic.density \(d\) must be in \(0, 1\], got 1.7"),
    ("unknown_model", ["--config.model=resnet999"], r"model must be one of \[.*got 'resnet999'"),
    ("unknown_dtype", ["--config.dtype=float8"], r"dtype must be one of"),
    ("negative_epochs", ["--config.num_epochs=-1"], r"num_epochs must be a positive integer"),
    ("npz_without_y_test", ["--config.dataset.path={root}/no_y_test.npz"],
     r"no_y_test.npz' lacks array\(s\) \['y_test'\]"),
    ("npz_lengths", ["--config.dataset.path={root}/lengths.npz"],
     r"x_train has 64 images but y_train has 60 labels"),
    ("npz_is_text", ["--config.dataset.path={root}/text.npz"],
     r"text.npz' is not an .npz archive"),
    ("npz_label_out_of_range", ["--config.dataset.path={root}/label12.npz"],
     r"y_train\[37\] = 12 is outside \[0, 10\)"),
    ("npz_nan_pixels", ["--config.dataset.path={root}/nan.npz"],
     r"x_train\[5\] has non-finite pixels"),
    # More of what a user can get wrong.
    ("config_does_not_parse", ["--config={root}/broken_config.py"],
     r"broken_config.py' does not parse: invalid syntax \(line 1\)"),
    ("get_config_raises", ["--config=configs/quickstart.py:fbs2"],
     r"get_config\('fbs2'\) failed: quickstart variant must be 'fbs' or 'ftwt'"),
    ("workdir_not_writable", ["--workdir={root}/a_file/run"], r"--workdir '.*' cannot be written"),
    ("init_from_missing", ["--config.init_from={root}/no_such_run"],
     r"init_from '.*no_such_run' does not exist"),
    ("unknown_flag", ["--workdr=x"], r"Unknown command line flag 'workdr'"),
    ("batch_larger_than_data", ["--config.batch_size=4096"],
     r"batch_size \(4096\) is larger than the training split of 'digits' \(1500 examples\)"),
]


def _run_cli(args, root, workdir):
  args = [a.format(root=root) for a in args]
  argv = [sys.executable, "-m", "dynjax.main"]
  if not any(a.startswith("--config=") for a in args):
    argv.append("--config=configs/quickstart.py")
  if any(".npz" in a for a in args):
    argv.append("--config.dataset.name=npz")
  if not any(a.startswith("--workdir") for a in args):
    argv.append(f"--workdir={workdir}")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  env.pop("DYNJAX_DEBUG", None)
  return subprocess.run(argv + args, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
  """Runs every case once, two at a time (each is mostly interpreter start-up)."""
  root = str(tmp_path_factory.mktemp("inputs"))
  _write_npz_files(root)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {case: pool.submit(_run_cli, args, root, os.path.join(root, f"w_{case}"))
               for case, args, _ in CASES}
    return {case: f.result() for case, f in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case,args,pattern", CASES, ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line(cli_results, case, args, pattern):
  del args
  proc = cli_results[case]
  assert "Traceback" not in proc.stderr, proc.stderr
  assert proc.returncode == 1, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not LOG_LINE.match(l)]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("error: ")
  assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.slow
def test_debug_flag_shows_the_traceback(tmp_path):
  proc = _run_cli(["--config.dynamic.densty=0.5", "--debug"], str(tmp_path), str(tmp_path))
  assert proc.returncode == 1 and "Traceback" in proc.stderr
  assert "UserError: --config.dynamic.densty" in proc.stderr


# -- the loader in-process -------------------------------------------------

def test_overrides_are_parsed_with_the_field_type():
  config = config_loading.load_config(QUICKSTART, [
      ("num_epochs", "3"), ("optimizer.learning_rate", "5e-4"), ("optimizer.nesterov", "True"),
      ("optimizer.milestones", "(1,2,)"), ("dataset.path", "/x/y.npz"), ("max_train_steps", "7"),
      ("count_flops", "false"), ("model_kwargs.dropout_rate", "0.1"), ("dynamic.gate_ste", None)])
  assert config.num_epochs == 3 and config.optimizer.learning_rate == 5e-4
  assert config.optimizer.nesterov is True and tuple(config.optimizer.milestones) == (1, 2)
  assert config.dataset.path == "/x/y.npz" and config.max_train_steps == 7
  assert config.count_flops is False and config.model_kwargs.dropout_rate == 0.1
  assert config.dynamic.gate_ste is True
  validate(config)


def test_split_override_args():
  overrides, rest = config_loading.split_override_args(
      ["--config=c.py", "--config.a=1", "--config.b", "2", "--noconfig.c", "--config.d",
       "--config.e", "-1", "--workdir=w"])
  assert overrides == [("a", "1"), ("b", "2"), ("c", "false"), ("d", None), ("e", "-1")]
  assert rest == ["--config=c.py", "--workdir=w"]


def test_config_without_get_config_and_missing_file(tmp_path):
  path = tmp_path / "empty.py"
  path.write_text("x = 1\n")
  with pytest.raises(UserError, match="defines no get_config"):
    config_loading.load_config(str(path))
  with pytest.raises(UserError, match="does not exist"):
    config_loading.load_config(str(tmp_path / "nope.py"))
  path.write_text("import no_such_module_anywhere\n")
  with pytest.raises(UserError, match="ModuleNotFoundError"):
    config_loading.load_config(str(path))


REAL_KEYS = sorted(config_loading._field_paths(config_loading.load_config(QUICKSTART)))  # pylint: disable=protected-access


def _typo(key):
  return key[:-1] if len(key) > 1 else key + "x"


KEYS = st.one_of(st.sampled_from(REAL_KEYS),
                 st.sampled_from(REAL_KEYS).map(_typo),
                 st.sampled_from(REAL_KEYS).map(lambda k: "model." + k),
                 st.text("abcdefghij_.", max_size=12))
VALUES = st.one_of(st.none(), st.text(max_size=6),
                   st.integers(-3, 1000).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["true", "False", "none", "()", "(1,2)", "{'a': 1}", "[]",
                                    "sgd", "fbs", "float32", "0.5", "1e-3", "-0"]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(KEYS, VALUES), max_size=3))
def test_random_overrides_validate_or_fail_with_one_line(overrides):
  try:
    config = config_loading.load_config(QUICKSTART, overrides)
    validate(config, device_count=1)
  except (UserError, ConfigError) as e:
    message = str(e)
    assert message and "\n" not in message


@pytest.mark.parametrize("key,value,pattern", [
    ("optimizer.learning_rate", "nan", r"optimizer.learning_rate must be a finite number >= 0"),
    ("optimizer.learning_rate", "inf", r"optimizer.learning_rate must be a finite number >= 0"),
    ("optimizer.milestones", "(10,'x')", r"optimizer.milestones must be positive numbers"),
    ("optimizer.milestones", "(0,5)", r"optimizer.milestones must be positive numbers"),
])
def test_non_finite_and_non_numeric_optimizer_values_are_config_errors(key, value, pattern):
  config = config_loading.load_config(QUICKSTART, [(key, value)])
  with pytest.raises(ConfigError, match=pattern):
    validate(config, device_count=1)


# -- data checks in-process ------------------------------------------------

def test_data_checks_name_the_first_bad_index():
  x = np.zeros((6, 4, 4, 3), np.uint8)
  y = np.array([0, 1, 2, 3, 4, 5])
  data_validate.check_arrays((x, y), (x, y), num_classes=6)
  with pytest.raises(UserError, match=r"y_test\[4\] = 7 is outside \[0, 6\) \(2 such"):
    data_validate.check_arrays((x, y), (x, np.array([0, 1, 2, 3, 7, 9])), num_classes=6)
  with pytest.raises(UserError, match=r"y_train\[2\] = 1.5 is not a whole class index"):
    data_validate.check_arrays((x, np.array([0, 1, 1.5, 0, 0, 0])), (x, y), num_classes=6)
  with pytest.raises(UserError, match=r"x_train has shape \(6, 48\)"):
    data_validate.check_arrays((x.reshape(6, -1), y), (x, y), num_classes=6)
  with pytest.raises(UserError, match=r"train images are \(4, 4, 3\) but test images are "
                                      r"\(3, 4, 3\)"):
    data_validate.check_arrays((x, y), (x[:, 1:], y), num_classes=6)
  with pytest.raises(UserError, match=r"x_test has 6 images but y_test has 5 labels"):
    data_validate.check_arrays((x, y), (x, y[:5]), num_classes=6)
  with pytest.raises(UserError, match=r"dataset 'imagenet2012' has 1000 classes but num_classes "
                                      r"is 10; .* set --config.num_classes=1000"):
    data_validate.check_dataset(config_loading.load_config(
        QUICKSTART, [("dataset.name", "imagenet2012")]).dataset, 10)
  images = np.zeros((3, 2, 2), np.float32)
  images[2, 1, 0] = np.inf
  assert data_validate.first_nonfinite(images) == 2
  batch = {"image": np.zeros((4, 2, 2, 1), np.float32), "label": np.array([0, 1, 10, 2])}
  assert data_validate.batch_problem(batch, 10) == (
      "example 2 of its batch has label 10, outside [0, 10)")
  assert data_validate.find_bad_batch([(1, dict(batch, label=np.zeros(4))), (2, batch)], 10) \
      .startswith("the input of step 2: example 2")


class _Pipeline:
  """Three 2-example batches per epoch; the batch of `bad_step` has a NaN pixel."""
  steps_per_epoch = 3

  def __init__(self, bad_step):
    self.bad_step = bad_step

  def train_batches(self, epoch, start):
    for k in range(start, self.steps_per_epoch):
      image = np.zeros((2, 2, 2, 1), np.float32)
      if epoch * self.steps_per_epoch + k + 1 == self.bad_step:
        image[1, 0, 0, 0] = np.nan
      yield {"image": image, "label": np.zeros(2, np.int32)}


class _Checkpointer:
  directory = "/run/checkpoints"

  def __init__(self, latest):
    self.latest = latest

  def latest_step(self):
    return self.latest


def test_non_finite_loss_names_the_last_good_step_and_the_cause():
  from dynjax.train.trainer import _nonfinite_message  # pylint: disable=g-import-not-at-top
  # Steps 3..6 span two epochs; the batch of step 5 is bad.
  assert _nonfinite_message(2, 6, _Checkpointer(None), _Pipeline(5), 10) == (
      "non-finite training loss between steps 3 and 6 (finite through step 2); run stopped, "
      "no checkpoint was saved yet. The data is bad: the input of step 5: example 1 of its "
      "batch has non-finite pixels; fix the dataset")
  message = _nonfinite_message(2, 6, _Checkpointer(2), _Pipeline(7), 10)
  assert "the last checkpoint (step 2) is kept in /run/checkpoints" in message
  assert message.endswith("so training diverged: lower optimizer.learning_rate or set "
                          "optimizer.clip_norm")


# -- checkpoints -------------------------------------------------------------

def _tiny_config(**changes):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model_kwargs = {"width_multiplier": 0.0625}
  config.batch_size = 16
  config.num_epochs = 1
  config.max_train_steps = 4
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  config.count_flops = False
  config.update(changes)
  return config


def _flip_bytes(step_dir):
  files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
  assert files
  for name in files:
    with open(name, "r+b") as f:
      data = bytearray(f.read())
      data[::7] = bytes(b ^ 0xFF for b in data[::7])
      f.seek(0)
      f.write(data)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_cpu_compiles")
def test_damaged_latest_checkpoint_falls_back_and_resumes_exactly(tmp_path, caplog):
  straight, damaged, hopeless = (str(tmp_path / n) for n in ("straight", "damaged", "hopeless"))
  one = jax.devices()[:1]  # one device compiles fastest; resume is checked on 8 in test_train
  result = train_and_evaluate(_tiny_config(), straight, one)
  shutil.copytree(straight, damaged)
  shutil.copytree(straight, hopeless)
  _flip_bytes(os.path.join(damaged, "checkpoints", "4"))

  resumed = train_and_evaluate(_tiny_config(), damaged, one)  # restores step 2, trains 3 and 4
  warnings = [r.getMessage() for r in caplog.records if "cannot be restored" in r.getMessage()]
  assert len(warnings) == 1 and "resuming from step 2" in warnings[0]
  assert "\n" not in warnings[0]
  assert os.path.isdir(os.path.join(damaged, ckpt_lib.DAMAGED_SUBDIR, "4"))
  assert resumed["step"] == 4 and resumed["top1"] == result["top1"]
  a = ckpt_lib.load_checkpoint_variables(straight)
  b = ckpt_lib.load_checkpoint_variables(damaged)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)

  with pytest.raises(ConfigError, match=r"init_from '.*': only \d+ of its \d+ parameters fit"):
    train_and_evaluate(_tiny_config(model_kwargs={"width_multiplier": 0.125},
                                    init_from=straight), str(tmp_path / "other_width"), one)

  for step in (2, 4):
    _flip_bytes(os.path.join(hopeless, "checkpoints", str(step)))
  with pytest.raises(UserError, match=r"no checkpoint in '.*' can be restored \(steps \[4, 2\]"
                     ) as err:
    train_and_evaluate(_tiny_config(), hopeless, one)
  assert "\n" not in str(err.value)


_SAVER = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from dynjax.train import checkpoints
    checkpointer = checkpoints.Checkpointer(
        sys.argv[1], 2, {k: 0 for k in checkpoints.IDENTITY_FIELDS})
    step = 1
    while True:  # saves until killed; each save is 16 MB of the value `step`
      checkpointer.save(step, {"w": jnp.full((4_000_000,), float(step))}, {"epoch": step})
      print(step, flush=True)
      step += 1
""")


def _kill_during_a_save(workdir):
  """Starts the saver, SIGKILLs it while a save is being written; returns the
  checkpoint directory's listing afterwards."""
  directory = os.path.join(workdir, ckpt_lib.CHECKPOINT_SUBDIR)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen([sys.executable, "-c", _SAVER, workdir], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    while int(proc.stdout.readline() or 0) < 3:  # two saves finished, a third under way
      assert proc.poll() is None
    deadline = time.time() + 60
    while not any("tmp" in d for d in os.listdir(directory)):
      assert time.time() < deadline, "no save in progress was seen"
      time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)  # while a save is being written
  finally:
    proc.kill()
    proc.wait()
  return os.listdir(directory)


@pytest.mark.slow
def test_killed_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
  for attempt in range(3):  # the kill can land just after a rename: try again then
    workdir = str(tmp_path / f"attempt{attempt}")
    if any(not d.isdigit() for d in _kill_during_a_save(workdir)):
      break
  else:
    pytest.fail("the kill never interrupted a save")
  directory = os.path.join(workdir, ckpt_lib.CHECKPOINT_SUBDIR)
  checkpointer = ckpt_lib.Checkpointer(workdir, 2, {k: 0 for k in ckpt_lib.IDENTITY_FIELDS})
  finished = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
  assert finished and finished[-1] >= 2
  restored, meta = checkpointer.restore({"w": jnp.zeros((4_000_000,))})
  assert meta["epoch"] == finished[-1]
  np.testing.assert_array_equal(np.asarray(restored["w"]), float(finished[-1]))
  # The resumed run saves the interrupted step again over the stale temporary directory.
  checkpointer.save(finished[-1] + 1, {"w": restored["w"] + 1}, {"epoch": finished[-1] + 1})
  checkpointer.close()
  listing = os.listdir(directory)
  assert str(finished[-1] + 1) in listing and all(d.isdigit() for d in listing)


def test_init_from_of_another_model_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match="init_from '.*' does not exist"):
    ckpt_lib.check_init_from(str(tmp_path / "nothing"))
  with pytest.raises(ConfigError, match="does not exist; expected a torchvision"):
    ckpt_lib.check_init_from(str(tmp_path / "weights.pth"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConfigError, match="holds no dynjax checkpoint"):
    ckpt_lib.check_init_from(str(tmp_path / "empty"))
