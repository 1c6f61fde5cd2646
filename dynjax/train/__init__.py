"""Training and evaluation: `train_and_evaluate(config, workdir)` and its parts."""

from dynjax.train.config_check import ConfigError, validate
from dynjax.train.losses import (cross_entropy, fbs_lasso, ftwt_mask_accuracy, ftwt_mask_loss,
                                 ftwt_mask_weight, gated_layers, l2_kernel_penalty)
from dynjax.train.optim import create_optimizer, learning_rate_schedule, param_labels
from dynjax.train.state import TrainState, create_train_state
from dynjax.train.trainer import NonFiniteLossError, build_model, train_and_evaluate

__all__ = [
    "ConfigError", "NonFiniteLossError", "TrainState", "build_model", "create_optimizer",
    "create_train_state", "cross_entropy", "fbs_lasso", "ftwt_mask_accuracy", "ftwt_mask_loss",
    "ftwt_mask_weight", "gated_layers", "l2_kernel_penalty", "learning_rate_schedule",
    "param_labels", "train_and_evaluate", "validate",
]
