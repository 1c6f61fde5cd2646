"""TensorFlow for input pipelines only: imported lazily and kept off accelerators."""

from __future__ import annotations

_TF = None


def tensorflow():
  """Imports TensorFlow once, hiding GPUs and TPUs from it.

  tf.data runs on the host CPU; TensorFlow must not grab accelerator memory
  that JAX needs.
  """
  global _TF
  if _TF is None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for kind in ("GPU", "TPU"):
      try:
        tf.config.set_visible_devices([], kind)
      except (RuntimeError, ValueError):
        pass  # already initialised, or no such device type
    _TF = tf
  return _TF
