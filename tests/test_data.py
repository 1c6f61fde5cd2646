"""Data sources and pipelines: splits, determinism, resume position, augmentation, tfds."""

import ml_collections
import numpy as np
import pytest

from configs import default
from dynjax.data import (DatasetNotPreparedError, InputPipeline, array_source, augment,
                         create_source, digits_arrays, epoch_seed, host_augment, npz_arrays,
                         pad_batch, tfds_source)
from dynjax.data.tf_setup import tensorflow


@pytest.fixture(scope="module")
def digits():
  config = default.get_config()
  source = create_source(config.dataset)
  return source, InputPipeline(source, config.dataset, 64, 128, seed=3)


def test_digits_source_split_and_standardisation(digits):
  source, pipeline = digits
  assert (source.num_train, source.num_eval, source.eval_total) == (1500, 297, 297)
  assert source.image_shape == (8, 8, 1)
  assert pipeline.steps_per_epoch == 1500 // 64 and pipeline.eval_steps == 3
  (x_train, _), (x_test, _) = digits_arrays()
  assert x_train.shape == (1500, 8, 8, 1) and x_test.shape == (297, 8, 8, 1)
  images = np.concatenate([b["image"] for b in pipeline.train_batches(0)])
  assert abs(images.mean()) < 0.05 and abs(images.std() - 1.0) < 0.05


def test_epoch_order_is_a_pure_function_of_seed_and_epoch(digits):
  source, pipeline = digits
  first = list(pipeline.train_batches(0))
  again = list(pipeline.train_batches(0))
  resumed = list(pipeline.train_batches(0, start_step=7))
  assert len(first) == pipeline.steps_per_epoch and len(resumed) == len(first) - 7
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(first[7:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  other_epoch = next(iter(pipeline.train_batches(1)))
  assert not np.array_equal(first[0]["label"], other_epoch["label"])
  assert epoch_seed(3, 1) == epoch_seed(3, 1) != epoch_seed(3, 2)
  # One epoch visits every example at most once.
  labels = np.concatenate([b["label"] for b in first])
  assert len(labels) == 23 * 64


def test_eval_batches_are_padded_and_cover_every_example(digits):
  _, pipeline = digits
  batches = list(pipeline.eval_batches())
  assert len(batches) == 3 and all(b["image"].shape == (128, 8, 8, 1) for b in batches)
  assert sum(b["mask"].sum() for b in batches) == 297
  assert batches[-1]["mask"][:41].all() and not batches[-1]["mask"][41:].any()


def test_process_shares():
  rng = np.random.default_rng(0)
  train = (rng.integers(0, 255, (10, 4, 4, 3), dtype=np.uint8), np.arange(10))
  test = (rng.integers(0, 255, (5, 4, 4, 3), dtype=np.uint8), np.arange(5))
  shares = [array_source("npz", train, test, i, 2) for i in range(2)]
  assert [s.num_train for s in shares] == [5, 5]
  assert sum(s.num_eval for s in shares) == 5 and shares[0].eval_total == 5
  labels = [np.array([e["label"] for e in s.examples("test")]) for s in shares]
  np.testing.assert_array_equal(np.concatenate(labels), np.arange(5))
  config = default.get_config()
  pipelines = [InputPipeline(s, config.dataset, 4, 4, 0, process_count=2) for s in shares]
  # Per-process batch 2; every process yields the same number of eval batches.
  assert [p.local_batch for p in pipelines] == [2, 2]
  assert [len(list(p.eval_batches())) for p in pipelines] == [2, 2]


def test_npz_source(tmp_path):
  rng = np.random.default_rng(1)
  path = tmp_path / "mine.npz"
  np.savez(path, x_train=rng.integers(0, 255, (20, 6, 6, 3), dtype=np.uint8),
           y_train=rng.integers(0, 4, 20), x_test=rng.integers(0, 255, (6, 6, 6, 3), dtype=np.uint8),
           y_test=rng.integers(0, 4, 6))
  config = default.get_config()
  config.dataset.name = "npz"
  config.dataset.path = str(path)
  source = create_source(config.dataset)
  assert (source.num_train, source.num_eval, source.image_shape) == (20, 6, (6, 6, 3))
  batch = next(iter(InputPipeline(source, config.dataset, 10, 6, 0).train_batches(0)))
  assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
  bad = tmp_path / "bad.npz"
  np.savez(bad, x_train=np.zeros((2, 2, 2)))
  with pytest.raises(ValueError, match="lacks array"):
    npz_arrays(str(bad))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    npz_arrays(str(tmp_path / "missing.npz"))


def test_cutout_zeroes_one_clipped_square():
  tf = tensorflow()
  image = tf.ones([10, 10, 2])
  for s in range(5):
    out = augment.cutout(image, tf.constant([s, 7], tf.int64), 4).numpy()
    zeros = out[..., 0] == 0
    rows, cols = np.where(zeros)
    assert 0 < zeros.sum() <= 16 and (out[..., 1] == 0).sum() == zeros.sum()
    # A (clipped) rectangle: its area equals the bounding box's.
    assert zeros.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)


def test_pad_crop_flip_is_a_shifted_window_and_reproducible():
  tf = tensorflow()
  image = tf.reshape(tf.range(36, dtype=tf.float32), [6, 6, 1])
  seed = tf.constant([4, 2], tf.int64)
  out = augment.pad_crop_flip(image, seed, padding=2, flip=False).numpy()[..., 0]
  again = augment.pad_crop_flip(image, seed, padding=2, flip=False).numpy()[..., 0]
  np.testing.assert_array_equal(out, again)
  padded = np.pad(np.arange(36, dtype=np.float32).reshape(6, 6), 2)
  windows = [padded[i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
  assert any(np.array_equal(out, w) for w in windows)
  flips = {augment.pad_crop_flip(image, tf.constant([s, 0], tf.int64), 0, True).numpy()[0, 0, 0]
           for s in range(8)}
  assert flips == {0.0, 5.0}  # identity or mirrored


def test_pad_batch():
  batch = pad_batch({"image": np.ones((3, 2)), "label": np.arange(3)}, 5)
  np.testing.assert_array_equal(batch["mask"], [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(batch["label"], [0, 1, 2, 0, 0])


def test_cifar10_pipeline_on_mock_data():
  import tensorflow_datasets as tfds
  config = default.get_config()
  config.dataset.name = "cifar10"
  config.dataset.cutout = 8
  with tfds.testing.mock_data(num_examples=24):
    source = create_source(config.dataset)
    pipeline = InputPipeline(source, config.dataset, 8, 8, seed=0)
    assert source.image_shape == (32, 32, 3) and pipeline.crop_padding == 4 and pipeline.flip
    train = next(iter(pipeline.train_batches(0)))
    again = next(iter(pipeline.train_batches(0)))
    evals = next(iter(pipeline.eval_batches()))
  assert train["image"].shape == (8, 32, 32, 3) and train["image"].dtype == np.float32
  assert train["label"].shape == (8,) and train["label"].dtype == np.int32
  np.testing.assert_array_equal(train["image"], again["image"])
  # Normalised with the CIFAR mean / std: far from the 0..255 range.
  assert -3.0 < train["image"].min() and train["image"].max() < 3.0
  assert evals["image"].shape == (8, 32, 32, 3) and evals["mask"].sum() == 8


def test_missing_tfds_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(DatasetNotPreparedError, match="download_and_prepare"):
    tfds_source("cifar10", data_dir=str(tmp_path))


def test_imagenet_crops_from_jpeg_bytes():
  tf = tensorflow()
  image = tf.cast(tf.random.stateless_uniform([40, 60, 3], [1, 2], 0, 255, tf.int32), tf.uint8)
  jpeg = tf.io.encode_jpeg(image)
  train = augment.inception_crop(jpeg, tf.constant([3, 4], tf.int64), 16)
  again = augment.inception_crop(jpeg, tf.constant([3, 4], tf.int64), 16)
  assert train.shape == (16, 16, 3)
  np.testing.assert_array_equal(train.numpy(), again.numpy())
  evaluated = augment.center_crop(jpeg, 16)
  assert evaluated.shape == (16, 16, 3)
  # Centre crop = the central 35x35 (= 40 * 224/256) square, resized. Decoding
  # only the crop's JPEG blocks differs slightly at chroma-upsampling edges.
  decoded = tf.io.decode_jpeg(jpeg).numpy()
  reference = tf.image.resize(decoded[3:38, 13:48], [16, 16]).numpy()
  difference = np.abs(evaluated.numpy() - reference)
  assert np.mean(difference) < 1.0 and np.mean(difference < 1e-3) > 0.9


# -- in-memory (NumPy) pipeline ---------------------------------------------

def _ramp_source(n=12, h=6, w=6):
  """Images whose pixels encode (example, row, column): a crop's offsets and
  the example it came from can be read back from any output pixel."""
  ex, ys, xs = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
  images = (1000 * (ex + 1) + 10 * ys + xs).astype(np.float32)[..., None]
  source = array_source("npz", (images, np.arange(n)), (images[:5], np.arange(5)))
  # Undo the standardisation so the pixel codes are exact.
  source.arrays["train"] = (images, np.arange(n, dtype=np.int32))
  return source, images


def test_random_ints_are_stateless_uniform_and_independent_per_stream():
  positions = np.arange(20_000)
  a = host_augment.random_ints(5, positions, host_augment.CROP_Y, 9)
  np.testing.assert_array_equal(a, host_augment.random_ints(5, positions, host_augment.CROP_Y, 9))
  # Position 17 alone gives the same value as inside the batch.
  assert host_augment.random_ints(5, np.array([17]), host_augment.CROP_Y, 9)[0] == a[17]
  assert a.min() == 0 and a.max() == 8
  counts = np.bincount(a, minlength=9)
  assert np.all(np.abs(counts - 20_000 / 9) < 5 * np.sqrt(20_000 / 9))  # 5 sigma
  b = host_augment.random_ints(5, positions, host_augment.CROP_X, 9)
  other_seed = host_augment.random_ints(6, positions, host_augment.CROP_Y, 9)
  assert np.mean(a == b) < 0.2 and np.mean(a == other_seed) < 0.2  # 1/9 by chance


def test_numpy_pad_crop_flip_is_a_shifted_window_of_the_padded_image():
  _, images = _ramp_source()
  positions = np.arange(40, 52)
  out = host_augment.pad_crop_flip(images, 7, positions, padding=2, flip=True)
  again = host_augment.pad_crop_flip(images, 7, positions, padding=2, flip=True)
  np.testing.assert_array_equal(out, again)
  offsets, flips = set(), set()
  for i in range(len(images)):
    padded = np.pad(images[i, ..., 0], 2)
    windows = {(dy, dx, f): (padded[dy:dy + 6, dx:dx + 6][:, ::-1] if f
                             else padded[dy:dy + 6, dx:dx + 6])
               for dy in range(5) for dx in range(5) for f in (False, True)}
    match = [k for k, v in windows.items() if np.array_equal(out[i, ..., 0], v)]
    assert match, f"example {i} is not a (mirrored) window of its padded image"
    offsets.add(match[0][:2])
    flips.add(match[0][2])
  assert len(offsets) > 3 and flips == {False, True}
  # No padding, no flip: the identity.
  assert host_augment.pad_crop_flip(images, 7, positions, 0, False) is images


def test_numpy_cutout_zeroes_one_clipped_square():
  images = np.ones((64, 10, 10, 2), np.float32)
  out = host_augment.cutout(images, 3, np.arange(64), 4)
  clipped = 0
  for image in out:
    zeros = image[..., 0] == 0
    rows, cols = np.where(zeros)
    assert 0 < zeros.sum() <= 16 and (image[..., 1] == 0).sum() == zeros.sum()
    assert zeros.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    clipped += zeros.sum() < 16
  assert clipped > 0  # centres near a border clip the square


def test_numpy_batches_resume_and_do_not_depend_on_threads():
  source, images = _ramp_source()
  config = default.get_config()
  config.dataset.crop_padding = 1
  config.dataset.flip = True
  config.dataset.cutout = 2
  one = InputPipeline(source, config.dataset, 3, 4, seed=11, num_threads=1)
  many = InputPipeline(source, config.dataset, 3, 4, seed=11, num_threads=3)
  first = list(one.train_batches(2))
  assert len(first) == 4
  for a, b in zip(first, many.train_batches(2)):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(first[1:], many.train_batches(2, start_step=1)):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # Batch k holds the examples order[3k:3k+3], each augmented by its position.
  order = one.epoch_order(2)
  labels = np.concatenate([b["label"] for b in first])
  np.testing.assert_array_equal(labels, order)
  seed = epoch_seed(11, 2)
  expected = host_augment.pad_crop_flip(images[order[3:6]], seed, np.arange(3, 6), 1, True)
  expected = host_augment.cutout(expected, seed, np.arange(3, 6), 2)
  np.testing.assert_array_equal(first[1]["image"], expected)
  # Abandoning an epoch early stops its worker threads cleanly.
  batches = many.train_batches(3)
  next(batches)
  batches.close()

