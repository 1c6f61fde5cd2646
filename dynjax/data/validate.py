"""Dataset checks before training: one-line errors naming the first bad index.

A bad dataset otherwise fails late and obscurely: a text file named `.npz`
is reported as "pickled (object) data", arrays of different lengths fail
inside tf.data, a label >= num_classes trains silently (its one-hot row is
all zeros) and one NaN pixel turns every standardised image into NaN, which
surfaces steps later as a non-finite loss blamed on the learning rate.
`check_dataset(config)` runs before anything is compiled and raises
`DataError` (a `dynjax.errors.UserError`) for a `num_classes` below the classes
of a built-in dataset, and for npz files:

* a file that does not exist or is not an `.npz` archive;
* missing arrays (`x_train`, `y_train`, `x_test`, `y_test`) or object arrays;
* images that are not `[N, H, W]` / `[N, H, W, C]` numbers, labels that are not
  `[N]` integers (one-hot labels are named as such);
* images and labels of different lengths, train and test images of different
  shapes, empty splits;
* labels outside `[0, num_classes)` and non-finite pixels, naming the first
  offending example.

`find_bad_batch` re-reads the batches of a stretch of training steps (the
pipeline is a pure function of the step), so a non-finite loss can be traced
to its data for sources that are not checked up front (tfds).
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Iterable

import numpy as np

from dynjax.errors import UserError, describe

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
# Classes of the built-in datasets (their labels are 0 .. n-1).
KNOWN_CLASSES = {"digits": 10, "cifar10": 10, "imagenet2012": 1000}
_CHUNK = 4096  # examples per vectorised check (bounded extra memory)


class DataError(UserError):
  """A dataset the run cannot train on; the message names file, array and index."""


_checked: set[tuple] = set()  # files already checked, by (path, size, mtime, num_classes)


def check_dataset(dataset_config: Any, num_classes: int) -> None:
  """Checks the dataset named by `config.dataset` (npz files; the built-in
  digits and tfds datasets are trusted). A file checked before, unchanged,
  is not read again (`dynjax.main` checks before JAX starts, the trainer
  again for direct callers)."""
  known = KNOWN_CLASSES.get(dataset_config.name)
  if known is not None and isinstance(num_classes, int) and num_classes < known:
    raise DataError(f"dataset {dataset_config.name!r} has {known} classes but num_classes is "
                    f"{num_classes}; labels >= {num_classes} would train silently as all-zero "
                    f"targets: set --config.num_classes={known}")
  if dataset_config.name != "npz":
    return
  path = dataset_config.path
  try:
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, num_classes)
  except (OSError, TypeError):
    key = None
  if key is not None and key in _checked:
    return
  check_npz_file(path, num_classes)
  if key is not None:
    _checked.add(key)


def check_npz_file(path: str, num_classes: int) -> None:
  """Raises `DataError` unless `path` is an `.npz` the trainer can use."""
  where = f"dataset.path {path!r}"
  if not os.path.exists(path):
    raise DataError(f"{where} does not exist; expected an .npz file with arrays "
                    f"{', '.join(NPZ_ARRAYS)}")
  if os.path.isdir(path):
    raise DataError(f"{where} is a directory; expected an .npz file")
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(6)
    kind = "a single .npy array" if head == b"\x93NUMPY" else "not an .npz archive"
    raise DataError(f"{where} is {kind}; write one with numpy.savez(path, x_train=..., "
                    "y_train=..., x_test=..., y_test=...)")
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in NPZ_ARRAYS if k not in f.files]
      if missing:
        raise DataError(f"{where} lacks array(s) {missing} (it has {sorted(f.files)}); "
                        f"expected {', '.join(NPZ_ARRAYS)}")
      arrays = {}
      for name in NPZ_ARRAYS:
        try:
          arrays[name] = f[name]
        except ValueError as e:  # object arrays need pickle
          raise DataError(f"{where}: array {name} holds Python objects ({describe(e)}); "
                          "save numeric arrays") from e
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"{where} cannot be read as an .npz ({describe(e)})") from e
  check_arrays((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]),
               num_classes, where=where)


def check_arrays(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 num_classes: int, where: str = "dataset") -> None:
  """Checks `(images, labels)` of both splits (see the module docstring)."""
  shapes = {}
  for split, (images, labels) in (("train", train), ("test", test)):
    x, y = f"x_{split}", f"y_{split}"
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype.kind not in "uif" and images.dtype != np.bool_:
      raise DataError(f"{where}: {x} has dtype {images.dtype}; images must be numbers "
                      "(uint8 0..255 or floats)")
    if images.ndim not in (3, 4):
      raise DataError(f"{where}: {x} has shape {images.shape}; images must be "
                      "[N, H, W] or [N, H, W, C]")
    if len(images) == 0:
      raise DataError(f"{where}: {x} is empty")
    labels = _check_label_array(labels, y, len(images), where)
    if len(labels) != len(images):
      raise DataError(f"{where}: {x} has {len(images)} images but {y} has {len(labels)} "
                      "labels; they must have the same length")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
      i = int(bad[0])
      raise DataError(f"{where}: {y}[{i}] = {labels[i]} is outside [0, {num_classes}) "
                      f"({bad.size} such label(s)); fix the labels or set "
                      f"--config.num_classes={int(labels.max()) + 1}")
    if images.dtype.kind == "f":
      i = first_nonfinite(images)
      if i is not None:
        raise DataError(f"{where}: {x}[{i}] has non-finite pixels (NaN or Inf); fix or drop "
                        "that image")
    shapes[split] = images.shape[1:] + ((1,) if images.ndim == 3 else ())
  if shapes["train"] != shapes["test"]:
    raise DataError(f"{where}: train images are {shapes['train']} but test images are "
                    f"{shapes['test']} (H, W, C); both splits must have the same shape")


def _check_label_array(labels: np.ndarray, name: str, n: int, where: str) -> np.ndarray:
  if labels.ndim == 2 and labels.shape[1] > 1 and labels.shape[0] == n:
    raise DataError(f"{where}: {name} has shape {labels.shape}, which looks one-hot; labels "
                    f"must be class indices [N] (e.g. {name}.argmax(1))")
  if labels.ndim > 1 and labels.size == labels.shape[0]:
    labels = labels.reshape(-1)  # [N, 1]
  if labels.ndim != 1:
    raise DataError(f"{where}: {name} has shape {labels.shape}; labels must be [N] "
                    "class indices")
  if labels.dtype.kind in "ui":
    return labels.astype(np.int64)
  if labels.dtype.kind == "f":
    fractional = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    if fractional.size:
      i = int(fractional[0])
      raise DataError(f"{where}: {name}[{i}] = {labels[i]} is not a whole class index")
    return labels.astype(np.int64)
  raise DataError(f"{where}: {name} has dtype {labels.dtype}; labels must be integers")


def first_nonfinite(images: np.ndarray) -> int | None:
  """Index of the first example with a NaN / Inf value, or None."""
  for start in range(0, len(images), _CHUNK):
    chunk = np.asarray(images[start:start + _CHUNK])
    ok = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
    if not ok.all():
      return start + int(np.argmin(ok))
  return None


def batch_problem(batch: dict[str, np.ndarray], num_classes: int) -> str | None:
  """What is wrong with one training batch's data (None if nothing)."""
  images, labels = np.asarray(batch["image"]), np.asarray(batch["label"]).reshape(-1)
  i = first_nonfinite(images)
  if i is not None:
    return f"example {i} of its batch has non-finite pixels"
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    return (f"example {int(bad[0])} of its batch has label {labels[bad[0]]}, outside "
            f"[0, {num_classes})")
  return None


def find_bad_batch(batches: Iterable[tuple[int, dict[str, np.ndarray]]],
                   num_classes: int) -> str | None:
  """The first `(step, batch)` whose data is bad, described in words; None if
  every batch is fine (or the batches cannot be produced again)."""
  try:
    for step, batch in batches:
      problem = batch_problem(batch, num_classes)
      if problem:
        return f"the input of step {step}: {problem}"
  except Exception:  # pylint: disable=broad-except
    return None  # the diagnosis must never hide the original error
  return None
