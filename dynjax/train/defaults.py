"""The base experiment config; `configs/default.py` re-exports it.

Every field is documented where it is set. `dynjax.train.config_check`
derives the allowed keys from this config and the allowed names from the
registries (models, gates, datasets), so a new gate or model needs no edit
here or there.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from dynjax.layers import gating

DTYPES = ("float32", "bfloat16")  # values of `dtype`


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """One optimizer group (backbone or gates).

  Fields:
    name: `sgd` or `rmsprop`; for `gate_optimizer`, also `same` (the gates
      share the backbone optimizer, one group for all parameters).
    learning_rate: base learning rate (for the global batch).
    momentum: SGD / RMSProp momentum (0 disables it).
    nesterov: Nesterov momentum.
    weight_decay: strength of the weight decay.
    weight_decay_mode: `coupled` (PyTorch SGD: wd * w added to the gradient
      of every parameter of the group, BN and biases included) or `l2_loss`
      (TF style: wd * sum(w^2) / 2 added to the loss, on conv / expert /
      dense kernels only, not on gates, routers, BN or biases).
    schedule: `constant`, `step` or `cosine` (cosine anneals to 0 at the end
      of training).
    schedule_unit: `epoch` (the rate changes once per epoch, as PyTorch
      schedulers stepped per epoch) or `step` (every step).
    milestones: epochs at which `step` multiplies the rate by `decay_factor`.
    decay_factor: the `step` schedule's factor.
    warmup_epochs: linear warm-up from 0 (0 = none).
    clip_norm: clip the group's gradients to this global norm (0 = off).
    rmsprop_decay, rmsprop_eps, rmsprop_initial_scale: RMSProp's squared
      gradient decay, epsilon (added inside the square root, as TF) and the
      initial value of the squared-gradient accumulator (TF1 uses 1.0).
  """
  cfg = ml_collections.ConfigDict()
  cfg.name = "sgd"
  cfg.learning_rate = 0.1
  cfg.momentum = 0.9
  cfg.nesterov = False
  cfg.weight_decay = 0.0
  cfg.weight_decay_mode = "coupled"
  cfg.schedule = "constant"
  cfg.schedule_unit = "epoch"
  cfg.milestones = ()
  cfg.decay_factor = 0.1
  cfg.warmup_epochs = 0
  cfg.clip_norm = 0.0
  cfg.rmsprop_decay = 0.9
  cfg.rmsprop_eps = 1.0
  cfg.rmsprop_initial_scale = 1.0
  cfg.update(overrides)
  return cfg


def get_config() -> ml_collections.ConfigDict:
  """Returns the documented base config (see the field comments)."""
  config = ml_collections.ConfigDict()

  # Model: `dynjax.models.create(model, num_classes=..., dynamic=..., dtype=...,
  # **model_kwargs)`; e.g. model_kwargs = {"width_multiplier": 0.25}.
  config.model = "mcifarnet"
  config.model_kwargs = ml_collections.ConfigDict({"width_multiplier": 0.25})
  config.num_classes = 10

  # Gating policy, the `dynjax.layers.Policy` fields.
  config.dynamic = ml_collections.ConfigDict(dict(
      method="dense",         # a registered gate: dense | static | fbs | ftwt | bernoulli | ...
      density=1.0,            # d in (0, 1]: FBS winners / static width
      mass=1.0,               # r in (0, 1]: FTWT target mass
      mode="decoupled",       # FTWT: decoupled | joint
      target="mass",          # FTWT: mass | uniform
      experts=0,              # 0 = plain conv, n = CondConv with n experts
      gate_pool="avg",        # FTWT gate pooling: avg | max
      gate_softmax=True,      # FTWT gate softmax over pooled channels
      gate_ste=False,         # FTWT straight-through to the gate (off = official)
      mask_after_residual=False,  # FTWT ResNet `gtafterblock`
      fbs_ties="exact_k",     # FBS winners: exact_k (exactly k) | strict (official code)
      fbs_predictor_act="relu",  # FBS predictor activation: relu | layer
      options=ml_collections.ConfigDict(),  # the method's own settings (Gate.option_defaults)
  ))

  # Data. name: digits (offline, sklearn) | cifar10 | imagenet2012 | npz.
  config.dataset = ml_collections.ConfigDict(dict(
      name="digits",
      data_dir=placeholder(str),         # tfds data_dir (None = tfds default)
      manual_dir=placeholder(str),       # tfds manual_dir (ImageNet tarballs)
      path=placeholder(str),             # npz: file with x_train, y_train, x_test, y_test
      image_size=placeholder(int),       # ImageNet crop size (default 224); unused for CIFAR/digits
      crop_padding=placeholder(int),     # pad-and-crop padding; None = dataset default (CIFAR 4)
      flip=placeholder(bool),             # horizontal flips; None = dataset default
      cutout=0,               # Cutout square size (0 = off; the FBS-CondConv recipe uses 18)
      shuffle_buffer=placeholder(int),   # None = whole split (in-memory) / 16384 (tfds)
      train_split="train",
      eval_split="test",
  ))

  config.batch_size = 64          # global, over all devices and processes
  config.eval_batch_size = 128    # global
  config.num_epochs = 10
  config.max_train_steps = placeholder(int)  # optional cap on the total number of steps

  config.optimizer = optimizer_config(learning_rate=0.05, weight_decay=5e-4,
                                      schedule="cosine")
  # `same` = the gate heads (every registered gate's `scopes`) share `optimizer`.
  config.gate_optimizer = optimizer_config(name="same")

  # label_smoothing, then every registered gate's loss weights with their
  # defaults (`Gate.loss_keys`): FTWT `ftwt_mask_weight` (BCE mask loss) until
  # epoch int(`ftwt_cooldown` * num_epochs); FBS `fbs_lasso` (lambda of the
  # saliency lasso); Bernoulli `bernoulli_rate_weight` (rate penalty).
  config.loss = ml_collections.ConfigDict(dict(label_smoothing=0.0, **gating.loss_defaults()))

  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.log_every_steps = 50
  config.eval_every_epochs = 1
  # A checkpoint directory / workdir of another run (params and batch stats
  # with matching names and shapes are loaded, the rest stays initialised), or
  # a torchvision ResNet state_dict (`.pth` / `.pt`).
  config.init_from = placeholder(str)
  config.seed = 0
  config.dtype = "float32"        # float32 | bfloat16 (compute; params stay float32)
  config.count_flops = True       # dense vs dynamic MACs at evaluation
  return config
