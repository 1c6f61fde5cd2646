"""The JAX primitive objects the counter has rules for, found across versions.

Rules are keyed on primitive *objects*, never on names, so a renamed
primitive (`pjit` -> `jit`) cannot silently match the wrong rule. Objects are
looked up in the public modules first (`jax.lax`, `jax.extend.core.primitives`)
and in a few private ones as a fallback; a primitive missing from this JAX
version is simply absent from the sets below.
"""

from __future__ import annotations

import importlib

_MODULES = ("jax.extend.core.primitives", "jax.lax", "jax._src.lax.lax",
            "jax._src.pjit", "jax._src.ad_checkpoint", "jax._src.core",
            "jax._src.custom_derivatives", "jax._src.lax.control_flow")


def _modules():
  found = []
  for name in _MODULES:
    try:
      found.append(importlib.import_module(name))
    except ImportError:
      continue
  return found


def find(*names: str):
  """The first primitive object called `<name>` or `<name>_p` that exists."""
  for module in _modules():
    for name in names:
      for attr in (name, f"{name}_p"):
        prim = getattr(module, attr, None)
        if prim is not None and hasattr(prim, "bind"):
          return prim
  return None


def find_all(*names: str) -> frozenset:
  """Every primitive in `names` that this JAX version has."""
  return frozenset(p for p in (find(n) for n in names) if p is not None)


CONV = find("conv_general_dilated")
DOT = find("dot_general")
MUL = find("mul")
SELECT_N = find("select_n")
BROADCAST_IN_DIM = find("broadcast_in_dim")
RESHAPE = find("reshape")
TRANSPOSE = find("transpose")
SQUEEZE = find("squeeze")
SCAN = find("scan")
COND = find("cond")
WHILE = find("while")
REDUCE_WINDOW_SUM = find("reduce_window_sum")
CUMSUM = find("cumsum")
REDUCE_SUM = find("reduce_sum")

# Primitives that call a sub-jaxpr exactly once: recursed into (inlined).
CALLS = find_all("jit", "pjit", "closed_call", "core_call", "call",
                 "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
                 "remat", "remat2", "checkpoint")

# Elementwise: each output element depends on the same-index input elements
# only (after size-1 broadcasting). Zero MACs.
ELEMENTWISE = find_all(
    "abs", "acos", "acosh", "add", "and", "asin", "asinh", "atan", "atan2",
    "atanh", "bessel_i0e", "bessel_i1e", "cbrt", "ceil", "clamp", "clz",
    "complex", "conj", "convert_element_type", "copy", "cos", "cosh",
    "digamma", "div", "eq", "erf", "erf_inv", "erfc", "exp", "exp2", "expm1",
    "floor", "ge", "gt", "igamma", "igammac", "imag", "integer_pow",
    "is_finite", "le", "lgamma", "log", "log1p", "logistic", "lt", "max",
    "min", "ne", "neg", "nextafter", "not", "or", "polygamma",
    "population_count", "pow", "real", "reduce_precision", "rem", "round",
    "rsqrt", "shift_left", "shift_right_arithmetic", "shift_right_logical",
    "sign", "sin", "sinh", "sqrt", "square", "stop_gradient", "sub", "tan",
    "tanh", "xor", "zeta", "bitcast_convert_type")

# Value-preserving, one output per input (placement / barriers). Zero MACs.
IDENTITY = find_all("sharding_constraint", "device_put", "optimization_barrier",
                    "name", "mesh_cast", "reshard")

# Reductions over `axes` (channel-preserving unless they reduce the channel).
REDUCTIONS = find_all("reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
                      "reduce_and", "reduce_or", "reduce_xor", "argmax",
                      "argmin")

# Linear data movement whose liveness is the transpose of the op (computed
# with a VJP): primitive -> (linear primitive whose VJP is used, operand
# indices that carry data, None = all). Max-pooling's liveness is that of
# sum-pooling over the same windows.
_MOVES = (("slice", "slice", (0,)), ("pad", "pad", (0, 1)),
          ("concatenate", "concatenate", None), ("rev", "rev", (0,)),
          ("dynamic_slice", "dynamic_slice", (0,)),
          ("dynamic_update_slice", "dynamic_update_slice", (0, 1)),
          ("gather", "gather", (0,)), ("split", "split", (0,)),
          ("reduce_window_sum", "reduce_window_sum", (0,)),
          ("reduce_window_max", "reduce_window_sum", (0,)),
          ("reduce_window_min", "reduce_window_sum", (0,)),
          ("cumsum", "cumsum", (0,)), ("cummax", "cumsum", (0,)),
          ("cummin", "cumsum", (0,)), ("cumprod", "cumsum", (0,)),
          ("cumlogsumexp", "cumsum", (0,)))
LINEAR_MOVES = {find(name): (find(target), args) for name, target, args in _MOVES
                if find(name) is not None and find(target) is not None}

# Zero-MAC primitives without a precise liveness rule: any needed output
# makes every input needed (sorting, index arithmetic, randomness...).
OTHER_FREE = find_all(
    "iota", "sort", "top_k", "approx_top_k", "scatter", "scatter_add",
    "scatter_sub", "scatter_mul", "scatter_min", "scatter_max",
    "select_and_scatter_add", "select_and_gather_add", "select_and_scatter",
    "random_bits", "random_seed", "random_wrap", "random_unwrap", "random_split",
    "random_fold_in", "threefry2x32", "rng_bit_generator", "rng_uniform",
    "reduce", "reduce_window", "axis_index", "psum", "pmax",
    "pmin", "all_gather", "create_token", "after_all", "empty", "empty2",
    "argsort", "pure_callback", "debug_callback", "dce_sink")
