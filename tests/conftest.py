"""Test setup: 8 fake CPU devices, forced before JAX is imported anywhere."""

import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")



@pytest.fixture(scope="module")
def fast_cpu_compiles():
  """Skips XLA's optimisation passes for one test module.

  They dominate compile time on the CPU (about 3x for the zoo networks) and do
  not change what the tests check; flax's examples/imagenet tests do the same.
  Use with `pytestmark = pytest.mark.usefixtures("fast_cpu_compiles")`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
