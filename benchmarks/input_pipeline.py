"""Host-side throughput of the training input pipeline, in images/s.

    python benchmarks/input_pipeline.py                      # all pipelines, 1, 2 and all cores
    python benchmarks/input_pipeline.py --pipelines cifar_numpy --cores 1 4 all

Pipelines (each the real `InputPipeline.train_batches` of a training run,
augmentation included, no device work):

- `cifar_numpy`: 32x32x3 uint8 arrays in memory (the `npz` source), NumPy
  path, pad-4 crop + flip + Cutout 16, batch 256. Needs no TensorFlow.
- `cifar_tfds`: the tfds `cifar10` source on tf.data (PNG decoding, the same
  augmentation), batch 256, from synthetic images written in tfds's layout.
- `imagenet_tfds`: the tfds `imagenet2012` source on tf.data: JPEG decode of
  a random crop (Inception-style, 8-100% area), resize to 224, flip,
  normalise, batch 128, from synthetic JPEGs (about 400x350, natural-image
  sizes of 60-150 KB) written in tfds's layout (`imagenet2012/5.1.0/*.tfrecord`).

Each (pipeline, cores) pair runs in its own process pinned to that many cores
(`os.sched_setaffinity` before NumPy or TensorFlow start, so their thread pools
size themselves to it); the first batches (start-up, tf.data autotuning) are
not timed. The synthetic datasets are written once to `--data_dir` (default: a
temporary directory) and reused.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = ("cifar_numpy", "cifar_tfds", "imagenet_tfds")
BATCH = {"cifar_numpy": 256, "cifar_tfds": 256, "imagenet_tfds": 128}


# -- synthetic data --------------------------------------------------------

def _natural_image(rng, h: int, w: int):
  """Smooth colour waves plus sensor-like noise: JPEG sizes near real photos'."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  phase = rng.uniform(0, 6, 3).astype(np.float32)
  image = (127 + 60 * np.sin(x[..., None] / rng.uniform(4, 40) + phase)
           + 40 * np.cos(y[..., None] / rng.uniform(4, 40) + phase[::-1])
           + rng.normal(0, 14, (h, w, 3)))
  return image.clip(0, 255).astype(np.uint8)


def write_cifar_npz(path: str, num_train: int, num_test: int) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  np.savez(path, x_train=rng.integers(0, 256, (num_train, 32, 32, 3), dtype=np.uint8),
           y_train=rng.integers(0, 10, num_train),
           x_test=rng.integers(0, 256, (num_test, 32, 32, 3), dtype=np.uint8),
           y_test=rng.integers(0, 10, num_test))


def write_tfds(name: str, data_dir: str, num_train: int, num_test: int) -> None:
  """Writes synthetic `cifar10` / `imagenet2012` in tfds's on-disk layout, with
  tfds's own builder (its features, its TFRecord shards, its metadata), so
  `tfds.builder(name, data_dir=data_dir)` reads it as the prepared dataset."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from dynjax.data.tf_setup import tensorflow  # pylint: disable=g-import-not-at-top
  tf = tensorflow()
  base = tfds.builder_cls(name)

  def examples(count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
      if name == "imagenet2012":
        h, w = int(rng.integers(300, 500)), int(rng.integers(300, 500))
        jpeg = tf.io.encode_jpeg(_natural_image(rng, h, w), quality=90).numpy()
        yield f"{seed}_{i}", {"image": io.BytesIO(jpeg), "label": int(rng.integers(1000)),
                              "file_name": f"synthetic_{seed}_{i}.JPEG"}
      else:
        yield f"{seed}_{i}", {"image": _natural_image(rng, 32, 32), "label": int(rng.integers(10)),
                              "id": f"synthetic_{seed}_{i}"}

  class Synthetic(base, skip_registration=True):
    """The real builder with generated examples instead of the downloads."""

    def _split_generators(self, dl_manager):
      del dl_manager
      test = "validation" if name == "imagenet2012" else "test"
      return {"train": examples(num_train, 0), test: examples(num_test, 1)}

  Synthetic.name = name
  builder = Synthetic(data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=data_dir))


def prepare(data_dir: str, pipelines, args) -> None:
  os.makedirs(data_dir, exist_ok=True)
  npz = os.path.join(data_dir, "cifar_synthetic.npz")
  if "cifar_numpy" in pipelines and not os.path.exists(npz):
    write_cifar_npz(npz, args.cifar_examples, 256)
  if "cifar_tfds" in pipelines:
    write_tfds("cifar10", data_dir, args.cifar_tfds_examples, 256)
  if "imagenet_tfds" in pipelines:
    write_tfds("imagenet2012", data_dir, args.imagenet_examples, 16)


# -- one measurement (its own process) ---------------------------------------

def measure(pipeline_name: str, data_dir: str, seconds: float) -> dict:
  """Images/s of `train_batches` after two untimed batches, over whole epochs."""
  sys.path.insert(0, ROOT)
  from configs import default  # pylint: disable=g-import-not-at-top
  from dynjax.data import InputPipeline, create_source  # pylint: disable=g-import-not-at-top
  config = default.get_config().dataset
  if pipeline_name == "cifar_numpy":
    config.name, config.path = "npz", os.path.join(data_dir, "cifar_synthetic.npz")
    config.crop_padding, config.flip, config.cutout = 4, True, 16
  elif pipeline_name == "cifar_tfds":
    config.name, config.data_dir, config.cutout = "cifar10", data_dir, 16
  else:
    config.name, config.data_dir, config.eval_split = "imagenet2012", data_dir, "validation"
    config.shuffle_buffer = 1024
  source = create_source(config)
  pipeline = InputPipeline(source, config, BATCH[pipeline_name], BATCH[pipeline_name], seed=0)
  batches = iter(())
  epoch, images, start, warm = 0, 0, None, 2
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      batches = pipeline.train_batches(epoch)
      epoch += 1
      continue
    if warm:
      warm -= 1
      if not warm:
        start = time.perf_counter()
      continue
    images += len(batch["label"])
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      break
  shape = tuple(batch["image"].shape[1:])
  threads = pipeline.num_threads if source.arrays is not None else "tf.data autotune"
  return {"pipeline": pipeline_name, "cores": len(os.sched_getaffinity(0)),
          "images_per_sec": images / elapsed, "batch": BATCH[pipeline_name],
          "image_shape": shape, "threads": threads}


def _worker(args) -> None:
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.worker_cores]))
  print("RESULT " + json.dumps(measure(args.worker, args.data_dir, args.seconds)), flush=True)


# -- driver ------------------------------------------------------------------

def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
  parser.add_argument("--cores", nargs="+", default=["1", "2", "all"],
                      help="core counts to pin each measurement to ('all' = every usable core)")
  parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per figure")
  parser.add_argument("--data_dir", default=None, help="synthetic data (default: a temp dir)")
  parser.add_argument("--cifar_examples", type=int, default=20_000)
  parser.add_argument("--cifar_tfds_examples", type=int, default=8_192)
  parser.add_argument("--imagenet_examples", type=int, default=2048)
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--worker_cores", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _worker(args)
    return

  usable = len(os.sched_getaffinity(0))
  cores = sorted({usable if c == "all" else min(int(c), usable) for c in args.cores})
  temp = None
  if args.data_dir is None:
    temp = tempfile.TemporaryDirectory(prefix="dynjax_input_bench_")
    args.data_dir = temp.name
  sys.path.insert(0, ROOT)
  print(f"writing synthetic data to {args.data_dir} ...", file=sys.stderr, flush=True)
  prepare(args.data_dir, args.pipelines, args)

  rows = []
  for name in args.pipelines:
    for n in cores:
      command = [sys.executable, os.path.abspath(__file__), "--worker", name,
                 "--worker_cores", str(n), "--data_dir", args.data_dir,
                 "--seconds", str(args.seconds)]
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
      out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
      lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
      if out.returncode or not lines:
        print(f"{name} at {n} cores failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        continue
      rows.append(json.loads(lines[-1][len("RESULT "):]))
      print(f"{name}, {n} cores: {rows[-1]['images_per_sec']:.0f} images/s", file=sys.stderr,
            flush=True)

  print(f"\nHost: {usable} usable cores, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}\n")
  print("| pipeline | image | batch | cores | threads | images/s | images/s per core |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    shape = "x".join(str(s) for s in r["image_shape"])
    print(f"| {r['pipeline']} | {shape} | {r['batch']} | {r['cores']} | {r['threads']} | "
          f"{r['images_per_sec']:.0f} | {r['images_per_sec'] / r['cores']:.0f} |")
  if temp is not None:
    temp.cleanup()


if __name__ == "__main__":
  main()
