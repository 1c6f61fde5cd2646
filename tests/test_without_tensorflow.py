"""The in-memory input path and the quickstart run where TensorFlow is absent.

Each test runs Python in a subprocess whose `sitecustomize` hides
`tensorflow` and `tensorflow_datasets` from the import system, exactly as if
they were not installed (`find_spec` returns None, `import` raises
ModuleNotFoundError), as on accelerator hosts without the `tfds` extra.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HIDE_TENSORFLOW = textwrap.dedent("""
    import importlib.machinery
    import sys

    class _HideTensorFlow:
      @staticmethod
      def find_spec(name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
          return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

      @staticmethod
      def invalidate_caches():
        importlib.machinery.PathFinder.invalidate_caches()

    sys.meta_path[:] = [_HideTensorFlow if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]
""")


def _run_without_tensorflow(tmp_path, args, timeout=600):
  (tmp_path / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's run
  return subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)


def test_tensorflow_is_hidden(tmp_path):
  out = _run_without_tensorflow(tmp_path, ["-c", "import tensorflow"])
  assert "No module named 'tensorflow'" in out.stderr


@pytest.mark.slow
def test_in_memory_pipeline_and_imports_need_no_tensorflow(tmp_path):
  code = textwrap.dedent("""
      import numpy as np
      import dynjax, dynjax.data, dynjax.train, dynjax.main
      from configs import default
      from dynjax.data import InputPipeline, create_source
      config = default.get_config()
      config.dataset.cutout = 2
      pipeline = InputPipeline(create_source(config.dataset), config.dataset, 64, 128, seed=0)
      batch = next(iter(pipeline.train_batches(0)))
      evals = list(pipeline.eval_batches())
      assert batch["image"].shape == (64, 8, 8, 1) and len(evals) == 3
      config.dataset.name = "cifar10"
      try:
        create_source(config.dataset)
      except ImportError as e:
        assert 'pip install -e ".[tfds]"' in str(e), e
      else:
        raise AssertionError("cifar10 without TensorFlow must say how to install it")
      print("ok")
  """)
  out = _run_without_tensorflow(tmp_path, ["-c", code])
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.slow
def test_quickstart_main_runs_without_tensorflow(tmp_path):
  workdir = tmp_path / "run"
  out = _run_without_tensorflow(tmp_path, [
      "-m", "dynjax.main", "--config=configs/quickstart.py", f"--workdir={workdir}",
      "--config.max_train_steps=6", "--config.log_every_steps=3",
      "--config.checkpoint_every_steps=3", "--config.model_kwargs.width_multiplier=0.25"])
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step 6: test top-1" in out.stdout and "reduction" in out.stdout
  with open(workdir / "results.json") as f:
    result = json.load(f)
  assert result["step"] == 6 and result["eval_examples"] == 297
