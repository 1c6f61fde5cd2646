"""Gated convolution layers and the pure mask functions under them."""

from dynjax.layers.condconv import CondConv
from dynjax.layers.dynamic_conv import DYNAMIC, DynamicConv
from dynjax.layers.gated_bn import GatedBatchNorm
from dynjax.layers.gates import FBSSaliency, FTWTGate, GATE_MODULE_NAMES, is_gate_param
from dynjax.layers.masks import (binary_gate, channel_peak, ftwt_target_mask,
                                 num_winners, straight_through, wta_mask)
from dynjax.layers.policy import Policy

__all__ = [
    "CondConv", "DYNAMIC", "DynamicConv", "FBSSaliency", "FTWTGate",
    "GATE_MODULE_NAMES", "GatedBatchNorm", "Policy", "binary_gate", "channel_peak",
    "ftwt_target_mask", "is_gate_param", "num_winners", "straight_through",
    "wta_mask",
]
