"""The papers' published numbers, copied exactly from the specs.

Sources: FTWT README / ImageNet table (docs/methods.md#published-numbers); the seed paper's
Table 1 (MACs) and Table 2 (accuracy) for FBS-pruned CondConv
(same section). Keys are sweep job names (see `experiments.sweeps`).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PaperResult:
  """One published row.

  Attributes:
    top1: top-1 accuracy in percent.
    macs: MACs per example, in millions (None when the paper gives only a
      reduction).
    reduction: MAC ("FLOPs") reduction against the dense model, in percent.
    source: where the number is printed.
  """

  top1: float
  macs: float | None = None
  reduction: float | None = None
  source: str = ""


# Dense per-example MACs (millions) of the FTWT baselines: CIFAR from the
# official code's `nw_profile` table, ImageNet from the FTWT poster.
FTWT_BASELINE_MACS = {
    "vgg16_bn": 313.478144, "resnet56": 125.485760, "mobilenet_v1": 46.355456,
    "resnet18": 1800.0, "resnet34": 3600.0, "mobilenet_v1_imagenet": 569.0,
}

# (arch, r, mode) -> (top-1 %, FLOPs reduction %); r = 0 marks the baseline.
FTWT_CIFAR10 = {
    ("vgg16_bn", 0.0, "baseline"): (93.82, None),
    ("vgg16_bn", 0.92, "joint"): (93.55, 65.0),
    ("vgg16_bn", 0.92, "decoupled"): (93.73, 56.0),
    ("vgg16_bn", 0.85, "decoupled"): (93.19, 73.0),
    ("vgg16_bn", 0.88, "joint"): (92.65, 74.0),
    ("resnet56", 0.0, "baseline"): (93.66, None),
    ("resnet56", 0.80, "decoupled"): (92.63, 66.0),
    ("resnet56", 0.88, "joint"): (92.28, 54.0),
    ("mobilenet_v1", 0.0, "baseline"): (90.89, None),
    ("mobilenet_v1", 1.0, "decoupled"): (91.06, 78.0),
    ("mobilenet_v1", 1.0, "joint"): (91.21, 78.0),
}

# (arch, r) -> (baseline top-1, pruned top-1, FLOPs reduction %); all decoupled.
FTWT_IMAGENET = {
    ("resnet34", 0.97): (73.30, 73.25, 25.86),
    ("resnet34", 0.95): (73.30, 72.79, 37.77),
    ("resnet34", 0.93): (73.30, 72.17, 47.42),
    ("resnet34", 0.92): (73.30, 71.71, 52.24),
    ("resnet18", 0.91): (69.76, 67.49, 51.56),
    ("mobilenet_v1", 1.0): (69.57, 69.66, 41.07),
}

# Seed Table 1: density -> MACs (millions), fractional d*C convention.
SEED_TABLE1_MACS = {1.0: 174.3, 0.9: 145.5, 0.7: 88.3, 0.5: 45.3, 0.3: 16.5, 0.25: 11.5}
SEED_BASELINE_TOP1 = 94.84
# Seed Table 2: method -> {density: top-1 %}. FBS alone appears only in a figure.
SEED_TABLE2 = {
    "scp": {0.9: 94.91, 0.7: 94.17, 0.5: 93.12, 0.3: 90.32, 0.25: 88.56},
    "scp_condconv": {0.9: 94.85, 0.7: 94.03, 0.5: 93.43, 0.3: 90.88, 0.25: 89.83},
    "fbs_condconv": {0.9: 95.13, 0.7: 94.41, 0.5: 94.06, 0.3: 92.05, 0.25: 91.19},
}


def ftwt_cifar10(arch: str, r: float, mode: str) -> PaperResult | None:
  """The FTWT CIFAR-10 row, with MACs derived from the reduction."""
  row = FTWT_CIFAR10.get((arch, r, mode))
  if row is None:
    return None
  top1, reduction = row
  base = FTWT_BASELINE_MACS[arch]
  macs = base if reduction is None else base * (1 - reduction / 100)
  return PaperResult(top1, macs, reduction, "FTWT README")


def ftwt_imagenet(arch: str, r: float) -> PaperResult | None:
  """The FTWT ImageNet row (r = 0: the dense baseline)."""
  base = FTWT_BASELINE_MACS["mobilenet_v1_imagenet" if arch == "mobilenet_v1" else arch]
  if r == 0:
    tops = [v[0] for k, v in FTWT_IMAGENET.items() if k[0] == arch]
    return PaperResult(tops[0], base, None, "FTWT ImageNet table") if tops else None
  row = FTWT_IMAGENET.get((arch, r))
  if row is None:
    return None
  _, top1, reduction = row
  return PaperResult(top1, base * (1 - reduction / 100), reduction,
                     "FTWT ImageNet table")


def seed_table2(method: str, density: float) -> PaperResult | None:
  """The seed paper's Table-2 accuracy and Table-1 MACs for `method` at `d`."""
  if method == "dense":
    return PaperResult(SEED_BASELINE_TOP1, SEED_TABLE1_MACS[1.0], None,
                       "seed baseline, Table 1")
  top1 = SEED_TABLE2.get(method, {}).get(density)
  if top1 is None:
    return None
  macs = SEED_TABLE1_MACS.get(density)
  reduction = None if macs is None else 100 * (1 - macs / SEED_TABLE1_MACS[1.0])
  return PaperResult(top1, macs, reduction, "seed Tables 1-2")
