"""Sparse inference executors: compute only the active channels of gated models."""

from dynjax.sparse.active_conv import (active_conv, active_indices, bucket_sizes,
                                       gather_channels, scatter_channels)
from dynjax.sparse.executor import (DEFAULT_BUCKETS, ActiveSet, SparseExecutor,
                                    sparse_apply, sparse_dynamic_conv)

__all__ = [
    "DEFAULT_BUCKETS", "ActiveSet", "SparseExecutor", "active_conv", "active_indices",
    "bucket_sizes", "gather_channels", "scatter_channels", "sparse_apply",
    "sparse_dynamic_conv",
]
