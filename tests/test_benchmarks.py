"""The prepared device check runs end to end (at toy sizes, on the CPU)."""

import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_device_check_quick_writes_every_section(tmp_path):
  rng = np.random.default_rng(0)
  data = tmp_path / "tiny.npz"
  np.savez(data, x_train=rng.integers(0, 255, (256, 32, 32, 3), dtype=np.uint8),
           y_train=rng.integers(0, 10, 256), x_test=rng.integers(0, 255, (64, 32, 32, 3),
                                                                    dtype=np.uint8),
           y_test=rng.integers(0, 10, 64))
  out = tmp_path / "report.md"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "device_check.py"),
                         "--quick", f"--data={data}", f"--out={out}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = out.read_text()
  assert report.count("\n## ") == 4
  assert "failed" not in report and "skipped" not in report
  assert "quick run finished: top-1" in report
  assert "| fbs |" in report and "model TFLOP/s" in report
  assert report.count("max |sparse - masked|") == 1
