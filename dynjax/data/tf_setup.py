"""TensorFlow for the tfds input pipelines only: imported lazily and kept off
accelerators. In-memory sources (digits, npz) never import it; TensorFlow and
tensorflow-datasets come with the `tfds` extra (`pip install -e ".[tfds]"`)."""

from __future__ import annotations

_TF = None


def tensorflow():
  """Imports TensorFlow once, hiding GPUs and TPUs from it.

  tf.data runs on the host CPU; TensorFlow must not grab accelerator memory
  that JAX needs.
  """
  global _TF
  if _TF is None:
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"tensorflow-datasets sources (cifar10, imagenet2012) need TensorFlow ({e}); "
          "install the tfds extra: pip install -e \".[tfds]\"") from e
    for kind in ("GPU", "TPU"):
      try:
        tf.config.set_visible_devices([], kind)
      except (RuntimeError, ValueError):
        pass  # already initialised, or no such device type
    _TF = tf
  return _TF
