"""Input pipelines whose order is a pure function of (seed, epoch).

The training batches of epoch `e` are: this process's examples, shuffled with
`epoch_seed(seed, e)` (files too, for tfds), numbered, augmented with the
stateless seed `(epoch_seed, position)`, batched with `drop_remainder`. So
`train_batches(e, start_step=k)` yields exactly the batches `k, k+1, ...` of an
uninterrupted epoch: the data position saved in a checkpoint is `(epoch, k)`.

Evaluation batches are padded to a fixed size with a `mask` (1 = real
example), and every process yields the same number of them.

Two implementations keep these guarantees:

- In-memory sources (`array` kind: digits, npz) run on NumPy alone. The
  epoch's order is one permutation of the whole split; batch `k` is the
  permutation's slice `k`, gathered and augmented by `host_augment` (stateless
  in `(epoch_seed, position)`). Because every batch is a pure function of
  `(seed, epoch, k)`, a pool of `num_threads` threads builds the next batches
  concurrently and they are yielded in order (NumPy's gathers release the GIL).
- tfds sources (`cifar10`, `imagenet2012`) run on tf.data (JPEG decoding and
  the ImageNet crops need it), with `augment`'s stateless TensorFlow ops.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import os
from typing import Iterator

import numpy as np

from dynjax.data import augment
from dynjax.data import host_augment
from dynjax.data.sources import Source
from dynjax.data.tf_setup import tensorflow

DEFAULT_TFDS_SHUFFLE_BUFFER = 16_384
# (crop padding, flip) when the config leaves them as None.
AUGMENT_DEFAULTS = {"array": (0, False), "tfds_cifar": (4, True), "tfds_imagenet": (0, True)}


def epoch_seed(seed: int, epoch: int) -> int:
  """The shuffle / augmentation seed of one epoch: a pure function of both."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


class InputPipeline:
  """Host-local train and eval batches of one `Source`.

  Args:
    source: the dataset (already restricted to this process's share).
    dataset_config: `config.dataset` (crop_padding, flip, cutout, shuffle_buffer).
    batch_size, eval_batch_size: *global* batch sizes.
    seed: the run's seed.
    process_count: number of JAX processes (each loads batch / count examples).
    num_threads: threads building in-memory batches ahead of the training loop
      (None = the CPU cores this process may use, at most 8). The batches do
      not depend on it.

  Attributes:
    local_batch, local_eval_batch: per-process batch sizes.
    steps_per_epoch: full training batches per epoch (remainder dropped).
    eval_steps: evaluation batches per pass (the same on every process).
  """

  def __init__(self, source: Source, dataset_config, batch_size: int, eval_batch_size: int,
               seed: int, process_count: int = 1, num_threads: int | None = None):
    self.source = source
    self.seed = seed
    self.local_batch = batch_size // process_count
    self.local_eval_batch = eval_batch_size // process_count
    self.steps_per_epoch = source.num_train // self.local_batch
    if self.steps_per_epoch == 0:
      raise ValueError(f"batch_size ({batch_size}) is larger than the training split "
                       f"of {source.name!r} ({source.num_train * process_count} examples)")
    total = source.eval_total if source.eval_total is not None else source.num_eval
    self.eval_steps = math.ceil(math.ceil(total / process_count) / self.local_eval_batch)
    default_pad, default_flip = AUGMENT_DEFAULTS[source.kind]
    pad = dataset_config.get("crop_padding")
    flip = dataset_config.get("flip")
    self.crop_padding = default_pad if pad is None else int(pad)
    self.flip = default_flip if flip is None else bool(flip)
    self.cutout = int(dataset_config.get("cutout") or 0)
    buffer = dataset_config.get("shuffle_buffer")
    if buffer is None:
      buffer = source.num_train if source.kind == "array" else DEFAULT_TFDS_SHUFFLE_BUFFER
    self.shuffle_buffer = int(buffer)
    if num_threads is None:
      num_threads = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count() or 1)
    self.num_threads = max(1, int(num_threads))

  # -- preprocessing -------------------------------------------------------
  def _train_example(self, position, example, seed):
    tf = tensorflow()
    example_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)])
    crop_seed, cutout_seed = tf.unstack(augment.split_seed(example_seed, 2))
    image = example["image"]
    kind = self.source.kind
    if kind == "tfds_imagenet":
      size = self.source.image_shape[0]
      image = augment.inception_crop(image, crop_seed, size)
      if self.flip:
        image = augment.random_flip(image, augment.split_seed(crop_seed, 1)[0])
      image = augment.normalize(image, self.source.mean, self.source.std)
    else:
      if kind == "tfds_cifar":
        image = augment.normalize(image, self.source.mean, self.source.std)
      image = augment.pad_crop_flip(image, crop_seed, self.crop_padding, self.flip)
    if self.cutout:
      image = augment.cutout(image, cutout_seed, self.cutout)
    return {"image": tf.cast(image, tf.float32), "label": tf.cast(example["label"], tf.int32)}

  def _eval_example(self, example):
    tf = tensorflow()
    image = example["image"]
    if self.source.kind == "tfds_imagenet":
      image = augment.center_crop(image, self.source.image_shape[0])
      image = augment.normalize(image, self.source.mean, self.source.std)
    elif self.source.kind == "tfds_cifar":
      image = augment.normalize(image, self.source.mean, self.source.std)
    return {"image": tf.cast(image, tf.float32), "label": tf.cast(example["label"], tf.int32)}

  # -- iterators -----------------------------------------------------------
  def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches `start_step, ..., steps_per_epoch - 1` of `epoch`.

    Yields:
      `{"image": float32 [B, H, W, C], "label": int32 [B]}` with
      `B = local_batch`.
    """
    if not 0 <= start_step <= self.steps_per_epoch:
      raise ValueError(f"start_step must be in [0, {self.steps_per_epoch}], got {start_step}")
    if self.source.arrays is not None:
      return self._array_train_batches(epoch, start_step)
    tf = tensorflow()
    seed = epoch_seed(self.seed, epoch)
    file_seed = None if self.source.kind == "array" else seed
    ds = self.source.load("train", shuffle_seed=file_seed)
    ds = ds.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    ds = ds.enumerate().skip(start_step * self.local_batch)
    ds = ds.map(lambda pos, ex: self._train_example(pos, ex, seed),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch, drop_remainder=True)
    ds = ds.take(self.steps_per_epoch - start_step).prefetch(2)
    return ds.as_numpy_iterator()

  # -- in-memory (NumPy) ---------------------------------------------------
  def epoch_order(self, epoch: int) -> np.ndarray:
    """In-memory sources: the epoch's permutation of this process's training
    examples (the whole split is shuffled; `shuffle_buffer` applies to tfds)."""
    rng = np.random.Generator(np.random.PCG64(epoch_seed(self.seed, epoch)))
    return rng.permutation(self.source.num_train)

  def array_train_batch(self, epoch: int, step: int,
                        order: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """In-memory sources: training batch `step` of `epoch`, built on its own."""
    seed = epoch_seed(self.seed, epoch)
    order = self.epoch_order(epoch) if order is None else order
    positions = np.arange(step * self.local_batch, (step + 1) * self.local_batch)
    index = order[positions]
    images, labels = self.source.arrays["train"]
    image = images[index]
    image = host_augment.pad_crop_flip(image, seed, positions, self.crop_padding, self.flip)
    if self.cutout:
      image = host_augment.cutout(image, seed, positions, self.cutout)
    return {"image": np.asarray(image, np.float32),
            "label": np.asarray(labels[index], np.int32)}

  def _array_train_batches(self, epoch: int, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches built `num_threads` at a time (plus one ahead), yielded in order."""
    order = self.epoch_order(epoch)
    steps = iter(range(start_step, self.steps_per_epoch))
    pool = concurrent.futures.ThreadPoolExecutor(self.num_threads, "dynjax-input")
    pending = collections.deque()
    try:
      for step in steps:
        pending.append(pool.submit(self.array_train_batch, epoch, step, order))
        if len(pending) > self.num_threads:
          break
      while pending:
        batch = pending.popleft().result()
        step = next(steps, None)
        if step is not None:
          pending.append(pool.submit(self.array_train_batch, epoch, step, order))
        yield batch
    finally:
      pool.shutdown(wait=True, cancel_futures=True)

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """All evaluation examples of this process, in `eval_steps` padded batches.

    Yields:
      `{"image": [B, H, W, C], "label": [B], "mask": float32 [B]}` with
      `B = local_eval_batch`; padded rows have mask 0.
    """
    if self.source.arrays is not None:
      images, labels = self.source.arrays["test"]
      batches = ({"image": images[i:i + self.local_eval_batch],
                  "label": labels[i:i + self.local_eval_batch]}
                 for i in range(0, len(labels), self.local_eval_batch))
    else:
      tf = tensorflow()
      ds = self.source.load("test").map(self._eval_example, num_parallel_calls=tf.data.AUTOTUNE)
      batches = ds.batch(self.local_eval_batch).prefetch(2).as_numpy_iterator()
    produced = 0
    for batch in batches:
      produced += 1
      yield pad_batch(batch, self.local_eval_batch)
    shape = (self.local_eval_batch,) + tuple(self.source.image_shape)
    for _ in range(self.eval_steps - produced):  # processes with fewer examples
      yield {"image": np.zeros(shape, np.float32),
             "label": np.zeros((self.local_eval_batch,), np.int32),
             "mask": np.zeros((self.local_eval_batch,), np.float32)}


def pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads every array of `batch` to `size` rows with zeros, adding `mask`."""
  n = len(batch["label"])
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) if n < size else v
         for k, v in batch.items()}
  out["mask"] = (np.arange(size) < n).astype(np.float32)
  return out
