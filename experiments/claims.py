"""The papers' claims as tests over the study's rows.

Each `Claim` names the rows it compares and turns them into one quantity that
the claim says is positive (e.g. "FBS-CondConv top-1 minus SCP top-1 at
d = 0.25"), with a 95% interval over seeds (`experiments.stats`). The
verdict is `holds` when the whole interval is above 0, `fails` when it is
below 0, and `inconclusive` when it straddles 0, when a row has fewer than
three finished seeds, or when a compared run did not converge (no conclusion
is drawn from a network that has not learned).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from experiments import stats
from experiments import study

MIN_SEEDS = 3
# "Accuracy holds": the drop from the dense baseline is smaller than this
# many points (the FTWT paper's CIFAR rows lose 0.1-1.4 points).
ACCURACY_MARGIN = 2.0
# "Prunes substantially" (MobileNetV1 at r = 1; the paper reports 78%).
SUBSTANTIAL_REDUCTION = 50.0


@dataclasses.dataclass
class Outcome:
  """A claim's measured quantity, its verdict and a short explanation."""

  value: stats.Estimate
  verdict: str
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim: its text, the paper's evidence and how to test it here.

  Attributes:
    family: `fbs_condconv` or `ftwt`.
    text: the claim, as a sentence.
    paper: what the paper reports for it.
    rows: labels of the study rows the test reads.
    test: `{label: Row} -> Outcome`.
    unit: unit of the measured quantity (for the table).
  """

  family: str
  text: str
  paper: str
  rows: tuple[str, ...]
  test: Callable[[dict], Outcome]
  unit: str = "points"


def _ready(rows: dict, labels: Sequence[str]) -> str:
  """Why `labels` cannot be compared yet ('' when they can)."""
  for label in labels:
    row = rows.get(label)
    if row is None or len(row.done) < MIN_SEEDS:
      done = 0 if row is None else len(row.done)
      return f"{label}: {done}/{MIN_SEEDS} seeds finished"
    bad = [row.jobs[i].seed for i in row.done if not study.converged(row.curves[i])]
    if bad:
      return f"{label}: seed(s) {bad} did not converge"
  return ""


def _outcome(value: stats.Estimate, reason: str, detail: str = "") -> Outcome:
  if reason:
    return Outcome(value, "inconclusive", reason)
  return Outcome(value, stats.verdict(value, MIN_SEEDS), detail)


def better_accuracy(a: str, b: str) -> Callable[[dict], Outcome]:
  """Test: top-1 of row `a` minus top-1 of row `b` is positive."""
  def test(rows):
    reason = _ready(rows, (a, b))
    if a not in rows or b not in rows:
      return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", reason)
    return _outcome(stats.difference(rows[a].values("top1"), rows[b].values("top1")), reason)
  return test


def growing_gap(a_low: str, b_low: str, a_high: str, b_high: str) -> Callable[[dict], Outcome]:
  """Test: (a - b at the low density) minus (a - b at the high density) > 0."""
  def test(rows):
    labels = (a_low, b_low, a_high, b_high)
    reason = _ready(rows, labels)
    if any(label not in rows for label in labels):
      return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", reason)
    value = stats.difference_of_differences(*(rows[label].values("top1") for label in labels))
    return _outcome(value, reason)
  return test


def _pct(density: float) -> str:
  return f"d={density:g}"


def fbs_condconv_claims(densities: Sequence[float] = (0.5, 0.3, 0.25), suffix: str = "",
                        family: str = "fbs_condconv") -> list[Claim]:
  """The seed paper's Table-2 claims at each density, and the growing gap.

  `suffix` is appended to every row label (", 30 epochs" reads the rows of
  the longer recipe) and to every claim's text.
  """
  from experiments import paper_numbers as paper  # pylint: disable=g-import-not-at-top
  claims = []

  def paper_text(a, b, d):
    pa, pb = paper.seed_table2(a, d), paper.seed_table2(b, d)
    if pa is None or pb is None:
      return "not in Table 2 (FBS alone appears only in a figure)"
    return f"{pa.top1:.2f} vs {pb.top1:.2f} ({pa.top1 - pb.top1:+.2f})"

  for d in densities:
    tag = _pct(d)
    for a, b, name_a, name_b in (("fbs_condconv", "fbs", "FBS-CondConv", "FBS"),
                                 ("fbs_condconv", "scp", "FBS-CondConv", "SCP"),
                                 ("scp_condconv", "scp", "SCP-CondConv", "SCP")):
      la, lb = f"{name_a} {tag}{suffix}", f"{name_b} {tag}{suffix}"
      claims.append(Claim(family, f"{name_a} beats {name_b} at {tag}{suffix} (top-1)",
                          paper_text(a, b, d), (la, lb), better_accuracy(la, lb)))
  if len(densities) < 2:
    return claims
  low, high = min(densities), max(densities)
  pl = paper.seed_table2("fbs_condconv", low).top1 - paper.seed_table2("scp", low).top1
  ph = paper.seed_table2("fbs_condconv", high).top1 - paper.seed_table2("scp", high).top1
  labels = (f"FBS-CondConv {_pct(low)}{suffix}", f"SCP {_pct(low)}{suffix}",
            f"FBS-CondConv {_pct(high)}{suffix}", f"SCP {_pct(high)}{suffix}")
  claims.append(Claim(
      family, f"the FBS-CondConv - SCP gap grows as d falls ({_pct(high)} -> {_pct(low)}){suffix}",
      f"{ph:+.2f} at {_pct(high)} -> {pl:+.2f} at {_pct(low)}", labels, growing_gap(*labels)))
  return claims


def _reductions(row) -> list[float]:
  """Per-seed MAC reduction in % (the paper's convention when recounted)."""
  paper = study.reduction_values(row, exact=False)
  return paper if len(paper) == len(row.done) else study.reduction_values(row, exact=True)


def prunes_more(a: str, b: str) -> Callable[[dict], Outcome]:
  """Test: MAC reduction of row `a` minus that of row `b` is positive."""
  def test(rows):
    reason = _ready(rows, (a, b))
    if a not in rows or b not in rows:
      return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", reason)
    return _outcome(stats.difference(_reductions(rows[a]), _reductions(rows[b])), reason)
  return test


def reduction_above(a: str, threshold: float) -> Callable[[dict], Outcome]:
  """Test: MAC reduction of row `a` minus `threshold` (in %) is positive."""
  def test(rows):
    reason = _ready(rows, (a,))
    if a not in rows:
      return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", reason)
    values = _reductions(rows[a])
    value = stats.estimate(values)
    shifted = stats.Estimate(value.mean - threshold, value.half, value.n)
    return _outcome(shifted, reason, f"reduction {value.text('.1f')}%")
  return test


def accuracy_within(a: str, base: str, margin: float) -> Callable[[dict], Outcome]:
  """Test: top-1 of `a` minus top-1 of `base`, plus `margin`, is positive
  (non-inferiority: `a` loses less than `margin` points)."""
  def test(rows):
    reason = _ready(rows, (a, base))
    if a not in rows or base not in rows:
      return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", reason)
    diff = stats.difference(rows[a].values("top1"), rows[base].values("top1"))
    shifted = stats.Estimate(diff.mean + margin, diff.half, diff.n)
    return _outcome(shifted, reason, f"top-1 change {diff.text('+.2f')}")
  return test


def beats_static(a: str, static_labels: Sequence[str]) -> Callable[[dict], Outcome]:
  """Test: row `a` beats the cheapest static row with at least `a`'s exact MACs."""
  def test(rows):
    reason = _ready(rows, (a,))
    if reason or a not in rows:
      return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", reason)
    macs = rows[a].estimate("dynamic_macs").mean
    candidates = [rows[s] for s in static_labels if s in rows and rows[s].done
                  and rows[s].estimate("dynamic_macs").mean >= macs]
    if not candidates:
      return _dominated_by_cheaper_static(rows, a, macs, static_labels)
    static = min(candidates, key=lambda r: r.estimate("dynamic_macs").mean)
    reason = _ready(rows, (static.label,))
    value = stats.difference(rows[a].values("top1"), static.values("top1"))
    return _outcome(value, reason, f"vs {static.label} "
                    f"({static.estimate('dynamic_macs').mean:.2f} M vs {macs:.2f} M MACs)")
  return test


def _dominated_by_cheaper_static(rows: dict, a: str, macs: float,
                                 static_labels: Sequence[str]) -> Outcome:
  """No static row costs as much as `a`: compare with the dearest cheaper one.

  A static network that is cheaper *and* significantly more accurate refutes
  the claim (a static network of `a`'s MACs would be wider still); a cheaper
  one that is less accurate settles nothing, so that stays inconclusive.
  """
  missing = f"no static row with at least {macs:.2f} M MACs finished"
  cheaper = [rows[s] for s in static_labels if s in rows and rows[s].done]
  if not cheaper:
    return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", missing)
  static = max(cheaper, key=lambda r: r.estimate("dynamic_macs").mean)
  value = stats.difference(rows[a].values("top1"), static.values("top1"))
  outcome = _outcome(value, _ready(rows, (static.label,)),
                     f"{missing}; vs the cheaper {static.label} "
                     f"({static.estimate('dynamic_macs').mean:.2f} M vs {macs:.2f} M MACs)")
  if outcome.verdict == "holds":
    return dataclasses.replace(outcome, verdict="inconclusive")
  return outcome


def mask_accuracy_rises(a: str) -> Callable[[dict], Outcome]:
  """Test: the gates' training mask accuracy at the end of the mask-loss phase
  minus at its first logged step is positive (in points)."""
  def test(rows):
    reason = _ready(rows, (a,))
    if a not in rows:
      return Outcome(stats.Estimate(float("nan"), float("nan"), 0), "inconclusive", reason)
    rises = [study.mask_accuracy_rise(row_curve) for row_curve in rows[a].mask_curves()]
    rises = [r for r in rises if r is not None]
    return _outcome(stats.estimate(rises), reason)
  return test


FTWT_STATIC = {arch: tuple(f"{arch} static w={w:g}" for w in (0.5, 0.75))
               for arch in ("vgg16_bn", "resnet20", "mobilenet_v1")}
# The paper's architecture behind each study architecture.
STUDY_ARCH = {"vgg16_bn": "vgg16_bn", "resnet56": "resnet20", "mobilenet_v1": "mobilenet_v1"}


def ftwt_claims() -> list[Claim]:
  """The FTWT paper's CIFAR claims over the `cpu_ftwt` rows."""
  from experiments import paper_numbers as paper  # pylint: disable=g-import-not-at-top
  red = lambda arch, r, mode: paper.ftwt_cifar10(arch, r, mode).reduction
  top = lambda arch, r, mode: paper.ftwt_cifar10(arch, r, mode).top1
  row = lambda arch, r, mode: f"{arch} r={r:g} {mode}"
  claims = [
      Claim("ftwt", "a lower r prunes more (VGG-16-BN decoupled, r = 0.85 vs 0.92)",
            f"{red('vgg16_bn', 0.85, 'decoupled'):.0f}% vs {red('vgg16_bn', 0.92, 'decoupled'):.0f}%",
            (row("vgg16_bn", 0.85, "decoupled"), row("vgg16_bn", 0.92, "decoupled")),
            prunes_more(row("vgg16_bn", 0.85, "decoupled"), row("vgg16_bn", 0.92, "decoupled")),
            "% MACs"),
      Claim("ftwt", "a lower r prunes more (VGG-16-BN joint, r = 0.88 vs 0.92)",
            f"{red('vgg16_bn', 0.88, 'joint'):.0f}% vs {red('vgg16_bn', 0.92, 'joint'):.0f}%",
            (row("vgg16_bn", 0.88, "joint"), row("vgg16_bn", 0.92, "joint")),
            prunes_more(row("vgg16_bn", 0.88, "joint"), row("vgg16_bn", 0.92, "joint")), "% MACs"),
      Claim("ftwt", "at equal r, joint prunes more than decoupled (VGG-16-BN, r = 0.92)",
            f"{red('vgg16_bn', 0.92, 'joint'):.0f}% vs {red('vgg16_bn', 0.92, 'decoupled'):.0f}%",
            (row("vgg16_bn", 0.92, "joint"), row("vgg16_bn", 0.92, "decoupled")),
            prunes_more(row("vgg16_bn", 0.92, "joint"), row("vgg16_bn", 0.92, "decoupled")),
            "% MACs"),
      Claim("ftwt", "at equal r, joint prunes more than decoupled (MobileNetV1, r = 1)",
            f"{red('mobilenet_v1', 1.0, 'joint'):.0f}% vs {red('mobilenet_v1', 1.0, 'decoupled'):.0f}%",
            (row("mobilenet_v1", 1.0, "joint"), row("mobilenet_v1", 1.0, "decoupled")),
            prunes_more(row("mobilenet_v1", 1.0, "joint"), row("mobilenet_v1", 1.0, "decoupled")),
            "% MACs"),
      Claim("ftwt", f"MobileNetV1 at r = 1 prunes substantially (reduction above "
            f"{SUBSTANTIAL_REDUCTION:.0f}%, decoupled)",
            f"{red('mobilenet_v1', 1.0, 'decoupled'):.0f}%", (row("mobilenet_v1", 1.0, "decoupled"),),
            reduction_above(row("mobilenet_v1", 1.0, "decoupled"), SUBSTANTIAL_REDUCTION),
            "% over the threshold"),
  ]
  for paper_arch, r, mode in sweeps_ftwt_rows():
    arch = STUDY_ARCH[paper_arch]
    base = paper.ftwt_cifar10(paper_arch, 0.0, "baseline").top1
    claims.append(Claim(
        "ftwt", f"accuracy holds at r = {r:g} ({arch} {mode}): loses < {ACCURACY_MARGIN:g} points",
        f"{top(paper_arch, r, mode) - base:+.2f} ({paper_arch})",
        (row(arch, r, mode), f"{arch} baseline"),
        accuracy_within(row(arch, r, mode), f"{arch} baseline", ACCURACY_MARGIN),
        "points over the margin"))
  for paper_arch, r, mode in sweeps_ftwt_rows():
    arch = STUDY_ARCH[paper_arch]
    claims.append(Claim(
        "ftwt", f"FTWT beats a static network of at least its MACs ({arch} r = {r:g} {mode})",
        "implied (dynamic beats static pruning)", (row(arch, r, mode), *FTWT_STATIC[arch]),
        beats_static(row(arch, r, mode), FTWT_STATIC[arch])))
  for arch, r, mode in (("vgg16_bn", 0.92, "decoupled"), ("resnet20", 0.8, "decoupled"),
                        ("mobilenet_v1", 1.0, "decoupled")):
    claims.append(Claim(
        "ftwt", f"the gates' mask accuracy rises during the gate phase ({arch} r = {r:g})",
        "the gates learn the targets", (row(arch, r, mode),),
        mask_accuracy_rises(row(arch, r, mode)), "points of mask accuracy"))
  return claims


def recipe_check(arch: str) -> Claim:
  """Did the family's recipe train the dense network at this width?

  A dense network that ends significantly below its own static half-width
  version (fewer MACs, trained by the same family's recipe) was not trained
  by that recipe, and rows started from it test nothing.
  """
  base, static = f"{arch} baseline", f"{arch} static w=0.5"
  return Claim("recipe", f"recipe check: the dense {arch} baseline is not below its static w=0.5 "
               "network (fewer MACs, same recipe family)", "sanity check (not a paper claim)", (base, static),
               better_accuracy(base, static))


def void_when(claim: Claim, checks: Sequence[Claim], verdict: str,
              reason: Callable[[Claim], str]) -> Claim:
  """`claim`, made inconclusive ("void: <reason(check)>") when one of
  `checks` reaches `verdict`."""
  def test(rows):
    outcome = claim.test(rows)
    for check in checks:
      if check.test(rows).verdict == verdict:
        return Outcome(outcome.value, "inconclusive", f"void: {reason(check)}")
    return outcome
  return dataclasses.replace(claim, test=test)


def with_recipe_checks(claims: Sequence[Claim]) -> list[Claim]:
  """Each architecture's recipe check first, then `claims` on that
  architecture voided where its check fails."""
  archs = list(dict.fromkeys(label.split()[0] for claim in claims for label in claim.rows))
  checks = {arch: recipe_check(arch) for arch in archs}
  guarded = []
  for claim in claims:
    arch = claim.rows[0].split()[0]
    guarded.append(void_when(claim, [checks[arch]], "fails",
                             lambda c: f"the {c.rows[0]} did not train (recipe check fails)"))
  return list(checks.values()) + guarded


def budget_check(row: str, longer: str) -> Claim:
  """Does a longer run of `row`'s recipe (the row `longer`) beat it?"""
  return Claim("budget", f"budget check: {row} improves at {longer.split(', ')[-1]} (top-1)",
               "budget check (not a paper claim)", (longer, row), better_accuracy(longer, row))


def with_budget_checks(claims: Sequence[Claim], pairs: Sequence[tuple[str, str]]) -> list[Claim]:
  """The budget checks of `pairs` (row, its longer run) first, then `claims`
  voided where one of them holds: a longer run of the same recipe is
  significantly better, so the recipe had not converged and its rows cannot
  support a verdict either way."""
  checks = [budget_check(row, longer) for row, longer in pairs]
  reason = lambda c: f"under-trained, {c.rows[1]} improves at {c.rows[0].split(', ')[-1]}"
  return checks + [void_when(claim, checks, "holds", reason) for claim in claims]


def _budget_pairs(suffix: str, longer: str, density: float = 0.25) -> list[tuple[str, str]]:
  """(row, the same row at the longer budget) for dense and every method at `density`."""
  bases = ("dense", *(f"{m} {_pct(density)}" for m in ("SCP", "FBS", "SCP-CondConv",
                                                          "FBS-CondConv")))
  return [(f"{base}{suffix}", f"{base}, {longer}") for base in bases]


def sweeps_ftwt_rows():
  from experiments import sweeps  # pylint: disable=g-import-not-at-top
  return sweeps.FTWT_CIFAR_ROWS


def evaluate(claims: Sequence[Claim], rows: Sequence[study.Row]) -> list[tuple[Claim, Outcome]]:
  table = study.by_label(rows)
  return [(claim, claim.test(table)) for claim in claims]


def markdown_table(evaluated: Sequence[tuple[Claim, Outcome]]) -> str:
  """claim | paper | measured here (mean ± 95% CI, seeds) | verdict."""
  lines = ["| claim | paper | measured here (mean ± 95% CI, seeds) | verdict |",
           "|---|---|---|---|"]
  for claim, outcome in evaluated:
    measured = "–" if outcome.value.n == 0 else (
        f"{outcome.value.text(signed_spec(claim))} {claim.unit} (n = {outcome.value.n})")
    verdict = outcome.verdict + (f" ({outcome.detail})" if outcome.detail else "")
    lines.append(f"| {claim.text} | {claim.paper} | {measured} | {verdict} |")
  return "\n".join(lines)


def signed_spec(claim: Claim) -> str:
  del claim
  return "+.2f"


def fbs_variant_claims(density: float = 0.25) -> list[Claim]:
  """Does either official-code FBS choice change the contested rows?

  Each compares a variant with dynjax's default at the same density; a
  positive difference means the official code's choice trains better.
  """
  tag = _pct(density)
  claims = []
  for method in ("FBS", "FBS-CondConv"):
    base = f"{method} {tag}"
    for variant, what in (("strict", "the strict tie rule (official code)"),
                          ("swishpred", "the layer's activation in the predictor (official code)")):
      claims.append(Claim(
          "fbs_variants", f"{what} beats dynjax's default for {base} (top-1)",
          "implementation check (not a paper claim)", (f"{base} ({variant})", base),
          better_accuracy(f"{base} ({variant})", base)))
  return claims


def convergence_claims() -> list[Claim]:
  """The budget check (what twice the epochs adds to a 15-epoch row), and the
  seed paper's Table-2 claims answered again from the 30-epoch rows."""
  claims = []
  for base in ("dense", "FBS-CondConv d=0.25"):
    longer = f"{base}, 30 epochs"
    claims.append(Claim(
        "convergence", f"30 epochs beat 15 for {base} (top-1)",
        "budget check (not a paper claim)", (longer, base), better_accuracy(longer, base)))
  return claims + fbs_condconv_claims((0.25, 0.5, 0.3), suffix=", 30 epochs",
                                      family="convergence")


def gpu_budget_claims(density: float = 0.25, epochs: int = 60) -> list[Claim]:
  """What `epochs` add to each full-width row of half as many (the budget
  checks of the shorter sweep), and the Table-2 claims at `density` answered
  again from the longer rows, voided where twice their epochs do better."""
  checks = [budget_check(row, longer) for row, longer in
            _budget_pairs(f", {epochs // 2} epochs", f"{epochs} epochs", density)]
  return checks + with_budget_checks(
      fbs_condconv_claims((density,), suffix=f", {epochs} epochs", family="gpu_budget"),
      _budget_pairs(f", {epochs} epochs", f"{2 * epochs} epochs", density))


def ftwt_budget_claims(arch: str = "vgg16_bn") -> list[Claim]:
  """What 25 epochs add to the 15-epoch FTWT baseline, and whether the static
  network that beat FTWT still stands against a dense one of its budget."""
  longer = f"{arch} baseline, 25 epochs"
  static = f"{arch} static w=0.75"
  return [
      Claim("ftwt_budget", f"25 epochs beat 15 for the {arch} baseline (top-1)",
            "budget check (not a paper claim)", (longer, f"{arch} baseline"),
            better_accuracy(longer, f"{arch} baseline")),
      Claim("ftwt_budget", f"the dense {arch} beats the static w=0.75 one at 25 epochs each (top-1)",
            "budget check (not a paper claim)", (longer, static), better_accuracy(longer, static)),
  ]


def ftwt_gate_claims(arch: str = "vgg16_bn", row: str = "r=0.85 decoupled") -> list[Claim]:
  """Does the FTWT gate without its softmax prune more, and still keep accuracy?"""
  plain, nosoftmax = f"{arch} {row}", f"{arch} {row} (no gate softmax)"
  base = f"{arch} baseline"
  return [
      Claim("ftwt_gates", f"without the gate softmax FTWT prunes more ({arch} {row})",
            "implementation check (not a paper claim)", (nosoftmax, plain),
            prunes_more(nosoftmax, plain), unit="% MACs"),
      Claim("ftwt_gates", f"accuracy holds without the gate softmax ({arch} {row}): "
            f"loses < {ACCURACY_MARGIN:g} points",
            "implementation check (not a paper claim)", (nosoftmax, base),
            accuracy_within(nosoftmax, base, ACCURACY_MARGIN)),
      Claim("ftwt_gates", f"FTWT without the gate softmax beats a static network of at least its "
            f"MACs ({arch} {row})", "implied (dynamic beats static pruning)",
            (nosoftmax,), beats_static(nosoftmax, FTWT_STATIC[arch])),
  ]


# The 15-epoch CPU rows that `cpu_convergence` reran at 30 epochs.
CPU_BUDGET_PAIRS = (("dense", "dense, 30 epochs"),
                    ("FBS-CondConv d=0.25", "FBS-CondConv d=0.25, 30 epochs"))


def for_sweep(sweep: str) -> list[Claim]:
  """The claims a study sweep answers (none for other sweeps)."""
  if sweep == "cpu_fbs_condconv":
    return with_budget_checks(fbs_condconv_claims(), CPU_BUDGET_PAIRS)
  if sweep == "cpu_ftwt":
    return with_recipe_checks(ftwt_claims())
  if sweep == "cpu_fbs_variants":
    return fbs_variant_claims()
  if sweep == "cpu_convergence":
    return convergence_claims()
  if sweep == "cpu_ftwt_budget":
    return ftwt_budget_claims()
  if sweep == "cpu_ftwt_gates":
    return ftwt_gate_claims()
  if sweep == "gpu_fbs_condconv":
    return with_budget_checks(
        fbs_condconv_claims((0.25, 0.5, 0.3), suffix=", 30 epochs", family="gpu_fbs_condconv"),
        _budget_pairs(", 30 epochs", "60 epochs"))
  if sweep in ("gpu_fbs_condconv_60ep", "gpu_fbs_condconv_120ep"):
    return gpu_budget_claims(epochs=int(sweep.split("_")[-1].removesuffix("ep")))
  if sweep in ("gpu_ftwt", "gpu_ftwt_warmup"):
    # The GPU sweep runs VGG-16-BN only: its claims are the ones on VGG rows.
    return with_recipe_checks([claim for claim in ftwt_claims() + ftwt_gate_claims()
                               if all(label.startswith("vgg16_bn") for label in claim.rows)])
  return []
