"""Where examples come from: the offline `digits` set, users' `npz` arrays and
tensorflow-datasets (`cifar10`, `imagenet2012`).

A source holds the *host-local, unaugmented* examples of each split;
`pipeline.py` shuffles, augments and batches them. In-memory sources (digits,
npz) are NumPy arrays split over processes by contiguous shards and need no
TensorFlow. tfds sources are `tf.data.Dataset`s of `{"image", "label"}` split
with `tfds.split_for_jax_process`; only they import TensorFlow (the `tfds`
extra: `pip install -e ".[tfds]"`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator

import numpy as np

from dynjax.data import tf_setup

# Per-channel statistics used for normalisation (RGB, 0..1 scale).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)  # the FTWT / common PyTorch values
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Names `dataset.name` accepts: in memory (NumPy pipeline), then tfds-built.
IN_MEMORY_DATASETS = ("digits", "npz")
TFDS_DATASETS = ("cifar10", "imagenet2012")
DATASETS = IN_MEMORY_DATASETS + TFDS_DATASETS

DIGITS_TEST_SIZE = 297  # 1797 digits -> 1500 train / 297 test


@dataclasses.dataclass
class Source:
  """One dataset, as the pipeline sees it.

  Attributes:
    name: dataset name.
    num_train, num_eval: examples per split on *this* process.
    image_shape: `(H, W, C)` of the model input after preprocessing.
    kind: `array` (already-decoded float images) or `tfds_cifar` /
      `tfds_imagenet` (uint8 / encoded images needing their preprocessing).
    load: tfds sources: `load(split, shuffle_seed) -> tf.data.Dataset` of
      host-local examples; `shuffle_seed` orders the files (None = the
      natural order). None for array sources.
    mean, std: per-channel normalisation of uint8 images (0..1 scale).
    eval_total: evaluation examples summed over all processes.
    arrays: array sources: `{"train" | "test": (images float32 [N, H, W, C],
      labels int32 [N])}`, this process's share.
  """

  name: str
  num_train: int
  num_eval: int
  image_shape: tuple[int, int, int]
  kind: str
  load: Callable | None
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None
  eval_total: int | None = None  # evaluation examples over all processes
  arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

  def examples(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's unaugmented examples of `split` ("train" / "test"), one
    `{"image", "label"}` dict each, in the natural order."""
    if self.arrays is not None:
      images, labels = self.arrays["train" if split == "train" else "test"]
      for image, label in zip(images, labels):
        yield {"image": image, "label": label}
    else:
      yield from self.load(split).as_numpy_iterator()


def _process_shard(n: int, process_index: int, process_count: int,
                   drop_remainder: bool) -> slice:
  """This process's contiguous share of `n` examples. Training drops the
  remainder (equal step counts); evaluation spreads it (every example counts)."""
  if drop_remainder:
    per_process = n // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)
  bounds = np.linspace(0, n, process_count + 1).round().astype(int)
  return slice(bounds[process_index], bounds[process_index + 1])


def array_source(name: str, train: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], process_index: int = 0,
                 process_count: int = 1) -> Source:
  """A source from in-memory arrays.

  Args:
    train, test: `(images [N, H, W, C], labels [N])`. uint8 images are scaled
      to [0, 1]; every image is then standardised with the per-channel mean and
      std of the *training* images (so the source is self-contained).
  """
  def prepare(images):
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    return images.astype(np.float32)

  x_train, x_test = prepare(train[0]), prepare(test[0])
  mean = x_train.mean(axis=(0, 1, 2))
  std = x_train.std(axis=(0, 1, 2)) + 1e-6
  x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  y_train, y_test = (np.asarray(y, np.int32).reshape(-1) for y in (train[1], test[1]))
  if len(x_train) != len(y_train) or len(x_test) != len(y_test):
    raise ValueError(f"dataset {name!r}: images and labels differ in length")
  train_share = _process_shard(len(x_train), process_index, process_count, True)
  test_share = _process_shard(len(x_test), process_index, process_count, False)
  shards = {"train": (np.ascontiguousarray(x_train[train_share]), y_train[train_share]),
            "test": (np.ascontiguousarray(x_test[test_share]), y_test[test_share])}
  return Source(name, len(shards["train"][0]), len(shards["test"][0]),
                tuple(x_train.shape[1:]), "array", None, eval_total=len(x_test),
                arrays=shards)


def digits_arrays() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """scikit-learn's 8x8 `digits` (1797 images, 10 classes, values 0..16),
  split by a fixed permutation into 1500 train / 297 test images."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]  # [1797, 8, 8, 1]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(images))
  test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
  return (images[train], labels[train]), (images[test], labels[test])


def npz_arrays(path: str):
  """Arrays `x_train, y_train, x_test, y_test` from a user's `.npz` file."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"dataset.path {path!r} does not exist; expected an .npz "
                            "file with arrays x_train, y_train, x_test, y_test")
  with np.load(path) as f:
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
    if missing:
      raise ValueError(f"dataset.path {path!r} lacks array(s) {missing}; expected "
                       "x_train, y_train, x_test, y_test")
    return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


_PREPARE_HELP = {
    "cifar10": ("run `python -c \"import tensorflow_datasets as tfds; "
                "tfds.builder('cifar10', data_dir=DIR).download_and_prepare()\"` "
                "once with network access, then set dataset.data_dir=DIR"),
    "imagenet2012": ("download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
                     "into dataset.manual_dir, then run `python -c \"import "
                     "tensorflow_datasets as tfds; tfds.builder('imagenet2012', "
                     "data_dir=DIR).download_and_prepare(download_config="
                     "tfds.download.DownloadConfig(manual_dir=MANUAL))\"`"),
}


class DatasetNotPreparedError(FileNotFoundError):
  """A tfds dataset is missing from `data_dir`; the message says how to fix it."""


def tfds_source(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                train_split: str = "train", eval_split: str = "test",
                image_size: int | None = None, process_index: int | None = None,
                process_count: int | None = None) -> Source:
  """A tensorflow-datasets source for `cifar10` or `imagenet2012`."""
  tf_setup.tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared() and not _is_mocked(tfds):
    raise DatasetNotPreparedError(
        f"dataset {name!r} is not prepared in data_dir {builder.data_dir!r}: "
        + _PREPARE_HELP[name] + (f" (manual_dir={manual_dir!r})" if manual_dir else ""))
  kw = {}
  if process_index is not None:
    kw = dict(process_index=process_index, process_count=process_count)
  splits = {"train": tfds.split_for_jax_process(train_split, drop_remainder=True, **kw),
            "test": tfds.split_for_jax_process(eval_split, drop_remainder=False, **kw)}
  if name == "imagenet2012":
    size = image_size or 224
    shape, kind, mean, std = (size, size, 3), "tfds_imagenet", IMAGENET_MEAN, IMAGENET_STD
    decoders = {"image": tfds.decode.SkipDecoding()}
  else:
    shape, kind, mean, std = (32, 32, 3), "tfds_cifar", CIFAR10_MEAN, CIFAR10_STD
    decoders = None

  def load(split, shuffle_seed=None):
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                  interleave_cycle_length=16 if shuffle_seed is not None else 1)
    ds = builder.as_dataset(split=splits[split], shuffle_files=shuffle_seed is not None,
                            decoders=decoders, read_config=read_config)
    return ds.map(lambda e: {"image": e["image"], "label": e["label"]})

  def count(split):
    try:
      return builder.info.splits[split].num_examples
    except KeyError:
      if not _is_mocked(tfds):
        raise
      # tfds.testing.mock_data without metadata: count the generated examples.
      return int(builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1))

  return Source(name, count(splits["train"]), count(splits["test"]), shape, kind, load,
                mean, std, eval_total=count(eval_split))


def _is_mocked(tfds) -> bool:
  """True inside `tfds.testing.mock_data`, whose builders are never prepared."""
  as_dataset = tfds.core.DatasetBuilder.as_dataset
  return "mock" in getattr(as_dataset, "__qualname__", "").lower()


def create_source(dataset_config, process_index: int = 0, process_count: int = 1) -> Source:
  """Builds the `Source` named by `config.dataset` (see configs/default.py)."""
  name = dataset_config.name
  if name == "digits":
    train, test = digits_arrays()
    return array_source("digits", train, test, process_index, process_count)
  if name == "npz":
    train, test = npz_arrays(dataset_config.path)
    return array_source("npz", train, test, process_index, process_count)
  if name in TFDS_DATASETS:
    return tfds_source(name, dataset_config.data_dir, dataset_config.manual_dir,
                       dataset_config.train_split, dataset_config.eval_split,
                       dataset_config.image_size, process_index, process_count)
  raise ValueError(f"dataset.name must be one of {list(DATASETS)}, got {name!r}")
