"""The exported sparse executor reloads and runs with jax alone."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from dynjax import models
from dynjax.sparse import export

# Runs in a fresh interpreter: only jax and numpy, never dynjax or flax.
_LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    from jax import export
    with open(sys.argv[1], "rb") as f:
      run = export.deserialize(bytearray(f.read())).call
    outs = [np.asarray(run(x[None])) for x in np.load(sys.argv[2])]
    np.save(sys.argv[3], np.concatenate(outs))
    leaked = [m for m in ("dynjax", "flax") if m in sys.modules]
    assert not leaked, leaked
""")


@pytest.mark.parametrize("policy", [dict(method="fbs", density=0.5), dict(method="ftwt", mass=0.9)],
                         ids=["fbs", "ftwt"])
def test_exported_executor_runs_without_dynjax(policy, tmp_path):
  model = models.create("mcifarnet", dynamic=policy, width_multiplier=0.125)
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 12, 12, 3))
  variables = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.PRNGKey(1), images)
  exported = export.export_executor(model, variables, (1, 12, 12, 3),
                                    sample_batches=[images[:1], images[1:2]])
  path = str(tmp_path / "model.jaxexport")
  assert export.save(exported, path) > 0
  np.save(tmp_path / "x.npy", np.asarray(images))
  script = tmp_path / "load.py"
  script.write_text(_LOADER)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, str(script), path, str(tmp_path / "x.npy"),
                         str(tmp_path / "y.npy")], capture_output=True, text=True,
                        cwd=str(tmp_path), env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  ref = model.apply(variables, images, train=False)
  np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-4, atol=1e-5)
  # In-process loading gives the same, and a wrong shape is refused.
  np.testing.assert_allclose(export.load(path)(images[:1]), ref[:1], rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="sample batch"):
    export.export_executor(model, variables, (1, 12, 12, 3), sample_batches=[images])
