r"""FBS-pruned CondConv on M-CifarNet: every row of the seed paper's Table 2.

Recipe: docs/methods.md#fbs-pruned-condconv and #training-recipes. Argument:
`method[,d][,key=value...]` with `method` one of

  dense         the M-CifarNet baseline (Table 1 d = 1.0 row, 94.84%)
  scp           static channel pruning: a width-ceil(dC) network from scratch
  scp_condconv  the same with 4-expert CondConv in every conv
  fbs           FBS, k = ceil(dC) winners per example (only in the paper's Fig. 2)
  fbs_condconv  FBS-pruned CondConv, 4 experts

and `d` in (0, 1] (the seed's rows: 0.9, 0.7, 0.5, 0.3, 0.25).

  python -m dynjax.main --config=configs/fbs_condconv.py:fbs_condconv,0.5 \
      --workdir=workdirs/fbs_condconv_fbs_condconv_d0.5

Recipe: RMSProp TF-style (decay 0.9, momentum 0.9, eps 1.0 inside the square
root), lr 0.01 cosine to 0, batch 256, 480 epochs; swish; He init; pad-4
crop, flip, per-channel standardisation, Cutout 18; weight decay 1e-4 as a TF
L2 loss on kernels; FBS lasso 1e-8; global-norm clipping at 5.0 (the seed
gives no value, docs/methods.md#optimisers; applied to every row so the rows stay comparable).

Expected runtime: one GPU, ~2-4 h per run (480 epochs of 195 steps).
Paper numbers targeted (docs/methods.md#published-numbers, top-1 %; MACs in M by the seed's
fractional-d*C convention, Table 1):

  d     MACs   SCP    SCP-CondConv  FBS-CondConv
  0.9   145.5  94.91  94.85         95.13
  0.7    88.3  94.17  94.03         94.41
  0.5    45.3  93.12  93.43         94.06
  0.3    16.5  90.32  90.88         92.05
  0.25   11.5  88.56  89.83         91.19      dense baseline 94.84 at 174.3
"""

from configs import common
from configs import default

METHODS = ("dense", "scp", "scp_condconv", "fbs", "fbs_condconv")
SEED_DENSITIES = (0.9, 0.7, 0.5, 0.3, 0.25)
NUM_EXPERTS = 4

# method -> (Policy method, CondConv experts)
_POLICY = {
    "dense": ("dense", 0),
    "scp": ("static", 0),
    "scp_condconv": ("static", NUM_EXPERTS),
    "fbs": ("fbs", 0),
    "fbs_condconv": ("fbs", NUM_EXPERTS),
}


def get_config(arg=None):
  """Returns the Table-2 run `method[,d]`."""
  opts = common.parse_arg(arg, ("method", "d"), dict(method="fbs_condconv", d=0.5))
  method = common.choice("method", opts["method"], METHODS)
  density = 1.0 if method == "dense" else opts["d"]
  if not 0.0 < density <= 1.0:
    raise ValueError(f"config argument d must be in (0, 1], got {density}")

  config = default.get_config()
  config.model = "mcifarnet"
  config.model_kwargs = dict(width_multiplier=1.0, activation="swish", conv_init="he")
  policy, experts = _POLICY[method]
  config.dynamic.method = policy
  config.dynamic.density = density
  config.dynamic.experts = experts

  common.use_cifar10(config, cutout=18)
  config.batch_size = 256
  config.eval_batch_size = 256
  config.num_epochs = 480
  config.optimizer = default.optimizer_config(
      name="rmsprop", learning_rate=0.01, momentum=0.9, rmsprop_decay=0.9,
      rmsprop_eps=1.0, rmsprop_initial_scale=1.0, weight_decay=1e-4,
      weight_decay_mode="l2_loss", schedule="cosine", schedule_unit="step",
      clip_norm=5.0)
  config.gate_optimizer = default.optimizer_config(name="same")
  config.loss.fbs_lasso = 1e-8
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 100
  return config
