"""One process of a multi-process training job, started by test_multiprocess.py.

    python -m dynjax.launch_local --num_processes=2 --devices_per_process=2 \\
        --module=... -- <workdir> <out_dir> <steps>

Joins the job (`dynjax.distributed.initialize`), trains the tiny config of
`tiny_config` through `train_and_evaluate`, then writes for this process:
`params_p<i>.npz` (its local copy of the replicated parameters),
`result_p<i>.json` (the final metrics) and `examples_p<i>.npy` (a fingerprint
of every training example in this process's share of the data).
"""

import hashlib
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dynjax import distributed  # pylint: disable=wrong-import-position


def tiny_config(steps: int):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.model_kwargs = {"width_multiplier": 0.125, "dropout_rate": 0.0}
  config.batch_size = 16
  config.eval_batch_size = 40  # 297 test images: uneven, padded shares
  config.max_train_steps = steps
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  return config


def fingerprints(source) -> np.ndarray:
  """A hash per training example of a data source's share, `[num_train]`."""
  out = []
  for example in source.examples("train"):
    image = np.round(np.asarray(example["image"], np.float32), 4)
    digest = hashlib.sha1(image.tobytes() + bytes([int(example["label"])])).digest()
    out.append(int.from_bytes(digest[:8], "little", signed=True))
  return np.asarray(out, np.int64)


def flat_params(params) -> dict[str, np.ndarray]:
  import jax  # pylint: disable=g-import-not-at-top
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
          for path, leaf in leaves}


def main(workdir: str, out_dir: str, steps: int) -> None:
  distributed.initialize()
  import jax  # pylint: disable=g-import-not-at-top
  from dynjax.data import create_source  # pylint: disable=g-import-not-at-top
  from dynjax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top

  config = tiny_config(steps)
  result, state = train_and_evaluate(config, workdir, return_state=True)
  index = jax.process_index()
  np.savez(os.path.join(out_dir, f"params_p{index}.npz"), **flat_params(state.params))
  with open(os.path.join(out_dir, f"result_p{index}.json"), "w") as f:
    json.dump({k: float(v) for k, v in result.items()}, f)
  share = create_source(config.dataset, index, jax.process_count())
  np.save(os.path.join(out_dir, f"examples_p{index}.npy"), fingerprints(share))
  print(f"process {index} done at step {result['step']}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
