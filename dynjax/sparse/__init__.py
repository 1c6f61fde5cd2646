"""Sparse inference executors: compute only the active channels of gated models."""

from dynjax.sparse.active_conv import (active_conv, active_indices, bucket_sizes,
                                       gather_channels, scatter_channels)
from dynjax.sparse.cost import CostModel, default_cost_model
from dynjax.sparse.executor import (DEFAULT_BUCKETS, PATHS, ActiveSet, PlanRecord, SparseExecutor,
                                    sparse_apply, sparse_dynamic_conv)

__all__ = [
    "DEFAULT_BUCKETS", "PATHS", "ActiveSet", "CostModel", "PlanRecord", "SparseExecutor",
    "active_conv", "active_indices", "bucket_sizes", "default_cost_model", "gather_channels",
    "scatter_channels", "sparse_apply", "sparse_dynamic_conv",
]
