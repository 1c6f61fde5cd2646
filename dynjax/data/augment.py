"""Stateless tf.data augmentation: every random choice is a pure function of a
per-example seed `[2] int64`, so an epoch's batches are reproducible and a
resumed run sees exactly the same images (docs/architecture.md#exact-resume).

Images are `[H, W, C]` float32 unless stated otherwise.
"""

from __future__ import annotations

from dynjax.data.tf_setup import tensorflow

EVAL_RESIZE_RATIO = 224 / 256  # ImageNet eval: resize to 256, centre-crop 224


def split_seed(seed, num: int):
  """`num` independent stateless seeds `[num, 2]` from one seed `[2]`."""
  return tensorflow().random.experimental.stateless_split(seed, num)


def pad_crop_flip(image, seed, padding: int, flip: bool):
  """CIFAR augmentation: zero-pad by `padding`, random crop back, random flip."""
  tf = tensorflow()
  crop_seed, flip_seed = tf.unstack(split_seed(seed, 2))
  if padding > 0:
    h, w = image.shape[0], image.shape[1]
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.stateless_random_crop(padded, [h, w, image.shape[2]], crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def cutout(image, seed, size: int):
  """Zero one `size x size` square with a uniform centre, clipped at the borders
  (DeVries & Taylor 2017; docs/methods.md#augmentation)."""
  tf = tensorflow()
  h, w = image.shape[0], image.shape[1]
  y_seed, x_seed = tf.unstack(split_seed(seed, 2))
  cy = tf.random.stateless_uniform([], y_seed, 0, h, dtype=tf.int32)
  cx = tf.random.stateless_uniform([], x_seed, 0, w, dtype=tf.int32)
  ys = tf.range(h)[:, None]
  xs = tf.range(w)[None, :]
  half = size // 2
  inside = ((ys >= cy - half) & (ys < cy - half + size) &
            (xs >= cx - half) & (xs < cx - half + size))
  return image * tf.cast(~inside, image.dtype)[..., None]


def normalize(image, mean, std):
  """uint8 (or 0..255) image -> float32 `(x / 255 - mean) / std`."""
  tf = tensorflow()
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def inception_crop(image_bytes, seed, size: int, area_range=(0.08, 1.0),
                   aspect_range=(3 / 4, 4 / 3)):
  """ImageNet training crop: a random box of 8-100% area and 3/4-4/3 aspect,
  decoded from the JPEG and resized to `size x size` (bilinear). uint8 -> float32
  in 0..255."""
  tf = tensorflow()
  shape = tf.image.extract_jpeg_shape(image_bytes)
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=aspect_range,
      area_range=area_range, max_attempts=10, use_image_if_no_bounding_boxes=True)
  y, x, _ = tf.unstack(begin)
  h, w, _ = tf.unstack(box_size)
  crop = tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([y, x, h, w]), channels=3)
  return tf.image.resize(crop, [size, size], method="bilinear")


def center_crop(image_bytes, size: int):
  """ImageNet evaluation: the central `size / (256/224)` square, resized to
  `size` (resize 256 + centre crop 224 for size 224). -> float32 0..255."""
  tf = tensorflow()
  shape = tf.image.extract_jpeg_shape(image_bytes)
  h, w = shape[0], shape[1]
  crop = tf.cast(EVAL_RESIZE_RATIO * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
  y, x = (h - crop + 1) // 2, (w - crop + 1) // 2
  image = tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([y, x, crop, crop]), channels=3)
  return tf.image.resize(image, [size, size], method="bilinear")


def random_flip(image, seed):
  return tensorflow().image.stateless_random_flip_left_right(image, seed)
