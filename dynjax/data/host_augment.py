"""Stateless NumPy augmentation for in-memory sources (no TensorFlow).

Every random choice is a pure function of `(seed, position, stream)`: the
epoch's seed, the example's position in the epoch's shuffled order, and which
decision it is (crop row, crop column, flip, Cutout row, Cutout column). There
is no generator state to save or restore, so batch `k` of an epoch can be built
on its own, by any thread, after any restart, and is always the same array: the
data position in a checkpoint is just `(epoch, step_in_epoch)`.

The bits come from SplitMix64 (Steele et al. 2014): `seed` and `stream` pick a
64-bit key, and the example's bits are output number `position` of the
SplitMix64 sequence started at that key. All operations are vectorised over a
batch of positions. Images are `[B, H, W, C]` float32.
"""

from __future__ import annotations

import numpy as np

# Streams: one independent random decision each.
CROP_Y, CROP_X, FLIP, CUTOUT_Y, CUTOUT_X = range(5)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finaliser: a bijection of uint64 that scatters every bit."""
  x = x ^ (x >> np.uint64(30))
  x = x * _M1
  x = x ^ (x >> np.uint64(27))
  x = x * _M2
  return x ^ (x >> np.uint64(31))


def random_bits(seed: int, positions: np.ndarray, stream: int) -> np.ndarray:
  """Independent uint64 bits per position: a pure function of the arguments."""
  with np.errstate(over="ignore"):
    key = _mix(np.asarray([(seed & 0xFFFFFFFF) << 8 | (stream & 0xFF)], np.uint64))
    positions = np.asarray(positions, np.int64).astype(np.uint64)
    return _mix(key + (positions + np.uint64(1)) * _GOLDEN)


def random_ints(seed: int, positions: np.ndarray, stream: int, maxval: int) -> np.ndarray:
  """Uniform integers in `[0, maxval)` per position (multiply-shift of the top
  32 bits; the bias is below `maxval / 2**32`)."""
  top = random_bits(seed, positions, stream) >> np.uint64(32)
  with np.errstate(over="ignore"):
    return ((top * np.uint64(maxval)) >> np.uint64(32)).astype(np.int64)


def pad_crop_flip(images: np.ndarray, seed: int, positions: np.ndarray, padding: int,
                  flip: bool) -> np.ndarray:
  """CIFAR augmentation: zero-pad by `padding`, crop a random `H x W` window,
  mirror it with probability 1/2. One gather for the whole batch."""
  b, h, w, _ = images.shape
  if padding <= 0 and not flip:
    return images
  rows = np.arange(h)[None, :].repeat(b, 0)
  cols = np.arange(w)[None, :].repeat(b, 0)
  if padding > 0:
    images = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    rows = rows + random_ints(seed, positions, CROP_Y, 2 * padding + 1)[:, None]
    cols = cols + random_ints(seed, positions, CROP_X, 2 * padding + 1)[:, None]
  if flip:
    mirrored = random_ints(seed, positions, FLIP, 2).astype(bool)
    cols = np.where(mirrored[:, None], cols[:, ::-1], cols)
  batch = np.arange(b)[:, None, None]
  return images[batch, rows[:, :, None], cols[:, None, :]]


def cutout(images: np.ndarray, seed: int, positions: np.ndarray, size: int) -> np.ndarray:
  """Zero one `size x size` square per image with a uniform centre, clipped at
  the borders (DeVries & Taylor 2017)."""
  _, h, w, _ = images.shape
  cy = random_ints(seed, positions, CUTOUT_Y, h)[:, None]
  cx = random_ints(seed, positions, CUTOUT_X, w)[:, None]
  top, left = cy - size // 2, cx - size // 2
  ys, xs = np.arange(h)[None, :], np.arange(w)[None, :]
  inside_y = (ys >= top) & (ys < top + size)
  inside_x = (xs >= left) & (xs < left + size)
  keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
  return images * keep[..., None].astype(images.dtype)
