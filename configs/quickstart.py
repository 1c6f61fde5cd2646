"""Quickstart: FBS dynamic channel pruning of M-CifarNet on the offline digits.

  python -m dynjax.main --config=configs/quickstart.py --workdir=/tmp/dynjax_quickstart

No download needed (scikit-learn's 8x8 `digits`, 1500 train / 297 test
images). M-CifarNet at half width, every conv gated by FBS at density
d = 0.5 (each example keeps the top half of every layer's channels), trained
from scratch with SGD + cosine (20 epochs, 460 steps). Expected: about 1.5 minutes on a 2-core CPU
(compilation included); it ends by printing the test top-1 (about 98%) and the
dense vs dynamic MACs per example with the reduction (about 75%: half the
output and half the input channels of every gated conv). Re-running with the
same workdir resumes from the last checkpoint (and, once finished, only
re-evaluates).

`get_config("ftwt")` trains the same network with FTWT gates (r = 0.9) instead.
"""

from configs import default


def get_config(method: str = "fbs"):
  config = default.get_config()
  config.model = "mcifarnet"
  # No dropout: the digits net is small and FBS already regularises.
  config.model_kwargs = {"width_multiplier": 0.5, "dropout_rate": 0.0}
  config.dataset.name = "digits"
  if method == "fbs":
    config.dynamic.method = "fbs"
    config.dynamic.density = 0.5
  elif method == "ftwt":
    config.dynamic.method = "ftwt"
    config.dynamic.mass = 0.9
    config.gate_optimizer = default.optimizer_config(name="sgd", learning_rate=0.1,
                                                     momentum=0.9)
  else:
    raise ValueError(f"quickstart variant must be 'fbs' or 'ftwt', got {method!r}")
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 20
  config.optimizer.learning_rate = 0.02
  config.optimizer.schedule = "cosine"
  config.optimizer.weight_decay = 5e-4
  # FBS multiplies every layer by its saliency: early gradients can be large.
  config.optimizer.clip_norm = 5.0
  config.checkpoint_every_steps = 100
  config.log_every_steps = 50
  config.eval_every_epochs = 5
  config.count_flops = True
  return config
