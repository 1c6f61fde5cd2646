"""The local multi-process launcher: real processes joined over loopback."""

import io
import sys
import textwrap
import time

import pytest

from dynjax import launch_local

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

PROBE = textwrap.dedent("""
    import os
    import sys
    import numpy as np
    import jax
    from dynjax import distributed
    distributed.initialize()
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(jax.devices()), ("data",))
    local = np.arange(2, dtype=np.float32) + 10 * jax.process_index()
    arr = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
    if jax.process_index() == 1 and "--die" in sys.argv:
        os._exit(3)  # dies at once, like a killed host (no clean shutdown)
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(arr)
    print("process", jax.process_index(), "of", jax.process_count(),
          "devices", jax.device_count(), "sum", float(total))
""")


def _run(tmp_path, *extra, timeout=90):
  script = tmp_path / "probe.py"
  script.write_text(PROBE)
  out = io.StringIO()
  start = time.monotonic()
  code = launch_local.launch([sys.executable, str(script), *extra], num_processes=2,
                             devices_per_process=2, timeout=timeout, sink=out)
  return code, out.getvalue(), time.monotonic() - start


def test_two_processes_form_one_four_device_job(tmp_path):
  code, out, _ = _run(tmp_path)
  assert code == 0, out
  # 0+1 from process 0 and 10+11 from process 1, summed across the global array.
  assert "[p0] process 0 of 2 devices 4 sum 22.0" in out
  assert "[p1] process 1 of 2 devices 4 sum 22.0" in out


def test_dead_process_fails_the_launch_quickly(tmp_path):
  code, out, elapsed = _run(tmp_path, "--die", timeout=60)
  assert code == 3, out
  assert "job failed" in out
  assert elapsed < 60  # the survivor blocked in a collective is killed, not waited for
