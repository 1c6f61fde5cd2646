"""Gated convolution layers, the gate plug-ins and the pure mask functions under them.

Importing this package registers the built-in gates (`dense`, `static`,
`fbs`, `ftwt`, `bernoulli`); `register_gate` adds more.
"""

from dynjax.layers.gating import (DYNAMIC, Gate, Mask, Pool, Winners, gate_scopes,
                                  gated_layers, get_gate, is_gate_param, list_gates,
                                  register_gate, unregister_gate)
from dynjax.layers.fbs import FBS, FBSSaliency, fbs_lasso
from dynjax.layers.ftwt import FTWT, FTWTGate, ftwt_mask_accuracy, ftwt_mask_loss, ftwt_mask_weight
from dynjax.layers.bernoulli import Bernoulli, BernoulliHead, rate_loss
from dynjax.layers.condconv import CondConv
from dynjax.layers.dynamic_conv import DynamicConv
from dynjax.layers.gated_bn import GatedBatchNorm
from dynjax.layers.masks import (binary_gate, channel_peak, ftwt_target_mask,
                                 num_winners, straight_through, wta_mask)
from dynjax.layers.policy import Policy

__all__ = [
    "Bernoulli", "BernoulliHead", "CondConv", "DYNAMIC", "DynamicConv", "FBS", "FBSSaliency",
    "FTWT", "FTWTGate", "Gate", "GatedBatchNorm", "Mask", "Policy", "Pool", "Winners",
    "binary_gate", "channel_peak", "fbs_lasso", "ftwt_mask_accuracy", "ftwt_mask_loss",
    "ftwt_mask_weight", "ftwt_target_mask", "gate_scopes", "gated_layers", "get_gate",
    "is_gate_param", "list_gates", "num_winners", "rate_loss", "register_gate",
    "straight_through", "unregister_gate", "wta_mask",
]
