"""Input data: sources (digits, npz, tfds) and reproducible input pipelines
(NumPy for in-memory sources, tf.data for tfds)."""

from dynjax.data.pipeline import InputPipeline, epoch_seed, pad_batch
from dynjax.data.sources import (DatasetNotPreparedError, Source, array_source,
                                 create_source, digits_arrays, npz_arrays, tfds_source)

__all__ = [
    "DatasetNotPreparedError", "InputPipeline", "Source", "array_source",
    "create_source", "digits_arrays", "epoch_seed", "npz_arrays", "pad_batch",
    "tfds_source",
]
