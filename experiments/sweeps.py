"""Named sweeps: the jobs that regenerate each paper table.

A `Job` is one `python -m dynjax.main` run: a config file with its argument,
a workdir name, extra `--config.*` overrides and the paper's number for that
row. `SWEEPS[name]()` builds the job list; the `cpu_*` sweeps of the CPU study
reuse the paper jobs with one short recipe per paper family and repeat every
row over seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from experiments import paper_numbers as paper

FTWT_CIFAR_ROWS = tuple(k for k in paper.FTWT_CIFAR10 if k[2] != "baseline")
FTWT_CIFAR_ARCHS = ("vgg16_bn", "resnet56", "mobilenet_v1")
SEED_DENSITIES = (0.9, 0.7, 0.5, 0.3, 0.25)
SEED_METHODS = ("scp", "scp_condconv", "fbs", "fbs_condconv")


@dataclasses.dataclass(frozen=True)
class Job:
  """One training run of a sweep.

  Attributes:
    name: workdir name (unique in the sweep).
    config: config file path relative to the repository root.
    arg: the config argument (the text after `:`).
    overrides: `(key, value)` pairs passed as `--config.key=value`.
    series: legend entry of the job in the sweep's plot (e.g. `FBS-CondConv`).
    label: row label in the table (e.g. `d=0.5`).
    paper: the published number for the row, if any.
    depends_on: name of the job whose workdir this one starts from.
    seed: the run's `config.seed` when the sweep repeats rows over seeds
      (rows that differ only in `seed` share `label` and `series`).
  """

  name: str
  config: str
  arg: str
  overrides: tuple[tuple[str, str], ...] = ()
  series: str = ""
  label: str = ""
  paper: paper.PaperResult | None = None
  depends_on: str | None = None
  seed: int | None = None

  def with_overrides(self, *pairs: tuple[str, str]) -> "Job":
    """A copy with more `--config.*` overrides (later ones win)."""
    return dataclasses.replace(self, overrides=self.overrides + tuple(pairs))


def _mass_text(r: float) -> str:
  return f"{r:g}"


def ftwt_cifar10_jobs(archs=FTWT_CIFAR_ARCHS, rows=FTWT_CIFAR_ROWS) -> list[Job]:
  """Dense baselines, then every (arch, r, mode) row of the FTWT CIFAR table."""
  jobs = []
  for arch in archs:
    base = f"ftwt_cifar_{arch}_baseline"
    jobs.append(Job(base, "configs/ftwt_cifar.py", arch, series=f"{arch} dense",
                    label=f"{arch} baseline", paper=paper.ftwt_cifar10(arch, 0.0, "baseline")))
    for row_arch, r, mode in rows:
      if row_arch != arch:
        continue
      jobs.append(Job(f"ftwt_cifar_{arch}_r{_mass_text(r)}_{mode}", "configs/ftwt_cifar.py",
                      f"{arch},{_mass_text(r)},{mode}", series=f"{arch} {mode}",
                      label=f"{arch} r={_mass_text(r)} {mode}",
                      paper=paper.ftwt_cifar10(arch, r, mode), depends_on=base))
  return jobs


def ftwt_imagenet_jobs() -> list[Job]:
  """ResNet-34 at four r, ResNet-18 at 0.91, MobileNetV1 dense then r = 1."""
  jobs = []
  for (arch, r), _ in paper.FTWT_IMAGENET.items():
    depends = None
    if arch == "mobilenet_v1":
      depends = f"ftwt_imagenet_{arch}_baseline"
      jobs.append(Job(depends, "configs/ftwt_imagenet.py", f"{arch},0", series=f"{arch} dense",
                      label=f"{arch} baseline", paper=paper.ftwt_imagenet(arch, 0.0)))
    jobs.append(Job(f"ftwt_imagenet_{arch}_r{_mass_text(r)}", "configs/ftwt_imagenet.py",
                    f"{arch},{_mass_text(r)}", series=f"{arch} decoupled",
                    label=f"{arch} r={_mass_text(r)}", paper=paper.ftwt_imagenet(arch, r),
                    depends_on=depends))
  return jobs


def fbs_condconv_jobs(methods=SEED_METHODS, densities=SEED_DENSITIES) -> list[Job]:
  """The M-CifarNet dense baseline, then every method at every density."""
  jobs = [Job("fbs_condconv_dense", "configs/fbs_condconv.py", "dense", series="dense",
              label="dense", paper=paper.seed_table2("dense", 1.0))]
  names = {"scp": "SCP", "scp_condconv": "SCP-CondConv", "fbs": "FBS",
           "fbs_condconv": "FBS-CondConv"}
  for method in methods:
    for d in densities:
      jobs.append(Job(f"fbs_condconv_{method}_d{d:g}", "configs/fbs_condconv.py",
                      f"{method},{d:g}", series=names[method], label=f"{names[method]} d={d:g}",
                      paper=paper.seed_table2(method, d)))
  return jobs


def scaled_milestones(milestones: tuple[int, ...], epochs: int, full_epochs: int) -> str:
  """Milestones of a `full_epochs` schedule moved proportionally to `epochs`."""
  scaled = sorted({max(1, round(m * epochs / full_epochs)) for m in milestones})
  return "(" + ",".join(str(m) for m in scaled) + ",)"


# ---------------------------------------------------------------- CPU study
# The CPU-scale protocol of docs/results.md: the real CIFAR-10 subset (5,085
# train / 1,017 test images), networks at a quarter of their width, and one
# short recipe per paper family that converges within its budget (about 3-5
# minutes per run on two CPU cores), applied identically to every row it
# compares. Every row runs with each seed of STUDY_SEEDS.
STUDY_SEEDS = (0, 1, 2)
STUDY_WIDTH = 0.25
STUDY_DENSITIES = (0.5, 0.3, 0.25)
STUDY_FBS_METHODS = ("scp", "scp_condconv", "fbs", "fbs_condconv")

# FBS-pruned CondConv family (M-CifarNet). The paper's 480 epochs of TF
# RMSProp (epsilon 1 inside the square root, lr 0.01) barely move a network in
# a few epochs; SGD with Nesterov momentum and a cosine schedule converges in
# 15 epochs on 5k images. Cutout is off (it regularises long runs and slows
# short ones); the rest of the recipe (swish, He init, pad-4 crop and flip,
# FBS lasso 1e-8, gradient clipping at 5) is the config's.
STUDY_FBS_RECIPE = (
    ("num_epochs", "15"), ("model_kwargs.width_multiplier", str(STUDY_WIDTH)),
    ("batch_size", "64"), ("eval_batch_size", "256"), ("dataset.cutout", "0"),
    ("optimizer.name", "sgd"), ("optimizer.learning_rate", "0.05"),
    ("optimizer.momentum", "0.9"), ("optimizer.nesterov", "True"),
    ("optimizer.weight_decay", "5e-4"), ("optimizer.weight_decay_mode", "coupled"),
    ("optimizer.schedule", "cosine"), ("optimizer.schedule_unit", "step"),
    ("log_every_steps", "20"), ("checkpoint_every_steps", "100000"), ("keep_checkpoints", "1"),
)


def seeded(job: Job, seed: int, prefix: str = "") -> Job:
  """`job` with `--config.seed=<seed>`, named `<prefix><name>_s<seed>`."""
  depends = f"{prefix}{job.depends_on}_s{seed}" if job.depends_on else None
  return dataclasses.replace(job.with_overrides(("seed", str(seed))),
                             name=f"{prefix}{job.name}_s{seed}", depends_on=depends,
                             seed=seed)


def study_fbs_condconv_jobs(seeds=STUDY_SEEDS) -> list[Job]:
  """Seed Table 2 at d in {0.5, 0.3, 0.25}, every method, every seed.

  Ordered so that a partly finished sweep answers whole claims: the dense
  baselines first, then one density at a time, every seed of it before the
  next: the most aggressive (where the methods differ most), then the
  mildest (which with it answers whether the gap grows), then the middle one.
  """
  rows = fbs_condconv_jobs(methods=STUDY_FBS_METHODS, densities=STUDY_DENSITIES)
  dense = [seeded(rows[0].with_overrides(*STUDY_FBS_RECIPE), seed, "cpu_") for seed in seeds]
  gated = []
  low, high = min(STUDY_DENSITIES), max(STUDY_DENSITIES)
  for density in (low, high, *sorted(set(STUDY_DENSITIES) - {low, high})):
    for seed in seeds:
      gated += [seeded(job.with_overrides(*STUDY_FBS_RECIPE), seed, "cpu_") for job in rows[1:]
                if job.label.endswith(f"d={density:g}")]
  return dense + gated


# The contested FBS rows (the most aggressive density) under the official FBS
# code's choices: the strict tie rule and the layer's activation (swish) in
# the saliency predictor, each alone.
STUDY_FBS_VARIANTS = (
    ("strict", (("dynamic.fbs_ties", "strict"),)),
    ("swishpred", (("dynamic.fbs_predictor_act", "layer"),)),
)


def study_fbs_variant_jobs(seeds=STUDY_SEEDS, densities=(0.25,)) -> list[Job]:
  """FBS and FBS-CondConv at `densities` with each official-code variant."""
  jobs = []
  for seed in seeds:
    for tag, pairs in STUDY_FBS_VARIANTS:
      for job in fbs_condconv_jobs(methods=("fbs", "fbs_condconv"), densities=densities)[1:]:
        job = dataclasses.replace(job.with_overrides(*STUDY_FBS_RECIPE, *pairs),
                                  name=f"{job.name}_{tag}", series=f"{job.series} ({tag})",
                                  label=f"{job.label} ({tag})")
        jobs.append(seeded(job, seed, "cpu_"))
  return jobs


def study_convergence_jobs(seeds=STUDY_SEEDS) -> list[Job]:
  """The budget check, then seed Table 2 again at twice the epochs.

  Dense and FBS-CondConv at d = 0.25 first (if doubling the 15-epoch recipe
  changed them by much less than the differences the claims rest on, the
  short recipe would have converged enough; it did not: dense gains about 8
  points, FBS-CondConv about 13), then SCP, FBS and SCP-CondConv at the same
  density, so that the d = 0.25 claims are answered at 30 epochs; then every
  method at d = 0.5 (which with d = 0.25 answers whether the gap grows) and
  at d = 0.3, every seed of a density before the next.
  """
  rows = fbs_condconv_jobs(methods=STUDY_FBS_METHODS, densities=STUDY_DENSITIES)
  by_label = {job.label: job for job in rows}
  gated = lambda d: [by_label[f"{method} d={d:g}"]
                     for method in ("SCP", "FBS", "SCP-CondConv", "FBS-CondConv")]
  groups = ([by_label["dense"], by_label["FBS-CondConv d=0.25"]],
            [by_label[f"{method} d=0.25"] for method in ("SCP", "FBS", "SCP-CondConv")],
            gated(0.5), gated(0.3))
  jobs = []
  for group in groups:
    for seed in seeds:
      for job in group:
        job = dataclasses.replace(job.with_overrides(*STUDY_FBS_RECIPE, ("num_epochs", "30")),
                                  name=f"{job.name}_30ep", label=f"{job.label}, 30 epochs",
                                  series=f"{job.series}, 30 epochs")
        jobs.append(seeded(job, seed, "cpu_"))
  return jobs


# FTWT family (VGG-16-BN, ResNet, MobileNetV1 on CIFAR). The paper trains a
# dense baseline for 200 epochs, then the FTWT run from it for 200 more; here
# the baseline gets the FBS family's 15-epoch SGD recipe and the FTWT stage 10
# epochs from it, with the paper's ratios kept: backbone lr a tenth of the
# baseline's (0.005, cosine), gates SGD 0.1 constant without weight decay, and
# the mask loss on for the first half of the stage. ResNet-56 (55 layers of
# 16-64 channels) runs about 5x slower per step than the quarter-width VGG on
# this CPU, so the ResNet rows use ResNet-20 (the same network with 3 blocks
# per stage instead of 9) at full width. The static comparators are uniform
# width networks (every conv at ceil(w*C) channels; ResNet's residual-writing
# convs stay full width) trained from scratch for the same 25 epochs the
# baseline and FTWT stage take together.
STUDY_FTWT_BASE_EPOCHS = 15
STUDY_FTWT_EPOCHS = 10
STUDY_FTWT_STATIC_WIDTHS = (0.5, 0.75)
# Study architecture -> (the paper's architecture whose rows it runs, its width).
STUDY_FTWT_ARCHS = {
    "vgg16_bn": ("vgg16_bn", STUDY_WIDTH),
    "resnet20": ("resnet56", 1.0),
    "mobilenet_v1": ("mobilenet_v1", STUDY_WIDTH),
}
STUDY_FTWT_COMMON = (
    ("batch_size", "64"), ("eval_batch_size", "256"), ("optimizer.nesterov", "True"),
    ("optimizer.schedule", "cosine"), ("optimizer.schedule_unit", "step"),
    ("log_every_steps", "20"), ("checkpoint_every_steps", "100000"), ("keep_checkpoints", "1"),
)
STUDY_FTWT_BASELINE = STUDY_FTWT_COMMON + (
    ("num_epochs", str(STUDY_FTWT_BASE_EPOCHS)), ("optimizer.learning_rate", "0.05"))
STUDY_FTWT_STAGE = STUDY_FTWT_COMMON + (
    ("num_epochs", str(STUDY_FTWT_EPOCHS)), ("optimizer.learning_rate", "0.005"),
    ("loss.ftwt_cooldown", "0.5"))
STUDY_FTWT_STATIC = STUDY_FTWT_COMMON + (
    ("num_epochs", str(STUDY_FTWT_BASE_EPOCHS + STUDY_FTWT_EPOCHS)),
    ("optimizer.learning_rate", "0.05"))


def _as_arch(job: Job, paper_arch: str, arch: str) -> Job:
  """A paper-row job of `paper_arch` renamed to run on `arch` (same r, mode)."""
  swap = lambda text: text.replace(paper_arch, arch) if text else text
  return dataclasses.replace(job, name=swap(job.name), arg=swap(job.arg), series=swap(job.series),
                             label=swap(job.label), depends_on=swap(job.depends_on))


def study_ftwt_jobs(seeds=STUDY_SEEDS, archs=tuple(STUDY_FTWT_ARCHS)) -> list[Job]:
  """Per architecture and seed: the dense baseline, the paper's FTWT rows from
  it, and the static-width comparators (architecture-major, then seed)."""
  jobs = []
  for arch in archs:
    paper_arch, width = STUDY_FTWT_ARCHS[arch]
    width_pair = ("model_kwargs.width_multiplier", str(width))
    for seed in seeds:
      for job in ftwt_cifar10_jobs(archs=(paper_arch,)):
        job = _as_arch(job, paper_arch, arch)
        recipe = STUDY_FTWT_STAGE if job.depends_on else STUDY_FTWT_BASELINE
        jobs.append(seeded(job.with_overrides(width_pair, *recipe), seed, "cpu_"))
      for w in STUDY_FTWT_STATIC_WIDTHS:
        job = Job(f"ftwt_cifar_{arch}_static_w{w:g}", "configs/ftwt_cifar.py", arch,
                  overrides=(("dynamic.method", "static"), ("dynamic.density", f"{w:g}")),
                  series=f"{arch} static", label=f"{arch} static w={w:g}")
        jobs.append(seeded(job.with_overrides(width_pair, *STUDY_FTWT_STATIC), seed, "cpu_"))
  return jobs


def study_ftwt_budget_jobs(seeds=STUDY_SEEDS, archs=("vgg16_bn",)) -> list[Job]:
  """The FTWT family's budget check: the dense baseline trained for the 25
  epochs that the static comparators (and baseline + FTWT stage) take, to
  separate what the static rows gain from the budget from what they gain
  from the method."""
  jobs = []
  epochs = STUDY_FTWT_BASE_EPOCHS + STUDY_FTWT_EPOCHS
  for arch in archs:
    paper_arch, width = STUDY_FTWT_ARCHS[arch]
    for seed in seeds:
      base = _as_arch(ftwt_cifar10_jobs(archs=(paper_arch,))[0], paper_arch, arch)
      job = dataclasses.replace(
          base.with_overrides(("model_kwargs.width_multiplier", str(width)), *STUDY_FTWT_STATIC),
          name=f"{base.name}_{epochs}ep", label=f"{base.label}, {epochs} epochs",
          series=f"{base.series}, {epochs} epochs")
      jobs.append(seeded(job, seed, "cpu_"))
  return jobs


def study_ftwt_gate_jobs(seeds=STUDY_SEEDS, arch="vgg16_bn", row="r=0.85 decoupled") -> list[Job]:
  """A diagnosis of FTWT's near-static gates: one `cpu_ftwt` row again with the
  gate head's softmax over the pooled channels switched off.

  The trained gates of every `cpu_ftwt` row reach exactly the mask accuracy
  of a fixed (input-independent) gate, while a linear probe of the same
  features predicts the targets far better (`experiments.diagnose --probe`).
  The softmax squeezes the head's input to values near 1/C_in, which leaves
  the input-dependent part of the logits tiny; without it the head reads the
  pooled activations themselves. The baselines it starts from are `cpu_ftwt`'s
  (listed first, so finished ones are skipped).
  """
  jobs = []
  for seed in seeds:
    rows = [job for job in study_ftwt_jobs(seeds=(seed,), archs=(arch,))
            if job.label in (f"{arch} baseline", f"{arch} {row}")]
    base, gated = rows
    jobs.append(base)
    jobs.append(dataclasses.replace(
        gated.with_overrides(("dynamic.gate_softmax", "False")),
        name=gated.name.replace(f"_s{seed}", f"_nosoftmax_s{seed}"),
        label=f"{gated.label} (no gate softmax)", series=f"{gated.series} (no gate softmax)"))
  return jobs


# ---------------------------------------------------------------- GPU study
# The CPU study's sweeps at the papers' full width, for an accelerator: the
# same recipes, data, seeds and row labels (so the same claims read them);
# only the width multiplier is 1 and the workdirs start with `gpu_`.
def full_width(job: Job) -> Job:
  """`job` with every width multiplier at 1, renamed `gpu_*`."""
  rename = lambda name: "gpu_" + name.removeprefix("cpu_") if name else name
  overrides = tuple((key, "1.0") if key == "model_kwargs.width_multiplier" else (key, value)
                    for key, value in job.overrides)
  if not any(key == "model_kwargs.width_multiplier" for key, _ in overrides):
    overrides += (("model_kwargs.width_multiplier", "1.0"),)
  return dataclasses.replace(job, name=rename(job.name), depends_on=rename(job.depends_on),
                             overrides=overrides)


def gpu_fbs_condconv_jobs(seeds=STUDY_SEEDS) -> list[Job]:
  """Seed Table 2 (every method at d in {0.25, 0.5, 0.3}, 30 epochs) at full width."""
  return [full_width(job) for job in study_convergence_jobs(seeds)]


GPU_BUDGET_DENSITY = 0.25


def gpu_budget_jobs(seeds=STUDY_SEEDS, density=GPU_BUDGET_DENSITY, epochs=60) -> list[Job]:
  """The full-width budget check: the dense row and every method at `density`
  again with `epochs` (60: twice the 30 of `gpu_fbs_condconv`; 120: twice
  that), to see whether the shorter recipe sufficed at full width."""
  jobs = []
  for job in gpu_fbs_condconv_jobs(seeds):
    if job.label == "dense, 30 epochs" or job.label.endswith(f"d={density:g}, 30 epochs"):
      jobs.append(dataclasses.replace(
          job.with_overrides(("num_epochs", str(epochs))),
          name=job.name.replace("_30ep_", f"_{epochs}ep_"),
          label=job.label.replace("30 epochs", f"{epochs} epochs"),
          series=job.series.replace("30 epochs", f"{epochs} epochs")))
  return jobs


def gpu_ftwt_jobs(seeds=STUDY_SEEDS, arch="vgg16_bn") -> list[Job]:
  """The FTWT rows of one architecture at full width (VGG-16-BN: the paper's
  network) and the gate-softmax diagnosis row: every seed's baseline first
  (the FTWT rows start from them), then the FTWT rows, then the static ones."""
  jobs = []
  for seed in seeds:
    jobs += [full_width(job) for job in study_ftwt_jobs(seeds=(seed,), archs=(arch,))]
    jobs.append(full_width(study_ftwt_gate_jobs(seeds=(seed,), arch=arch)[-1]))
  kind = lambda job: 0 if job.label.endswith("baseline") else 2 if "static" in job.label else 1
  return sorted(jobs, key=kind)


# The full-width VGG-16-BN diverges in its first steps under the CPU recipe
# (lr 0.05 from step 0; the head's update grows with the width) and spends
# 40% of its 15 epochs at the chance loss, so the GPU FTWT family warms the
# learning rate up linearly over the first 2 epochs in every row trained from
# scratch (the baselines and the static networks; the FTWT stage starts from
# a trained network at a tenth of the rate).
GPU_WARMUP_EPOCHS = 2


def gpu_ftwt_warmup_jobs(seeds=STUDY_SEEDS, arch="vgg16_bn") -> list[Job]:
  """`gpu_ftwt` with a learning-rate warm-up in the rows trained from scratch."""
  rename = lambda name: name.replace("gpu_", "gpu_warmup_", 1) if name else name
  jobs = []
  for job in gpu_ftwt_jobs(seeds, arch):
    if not job.depends_on:
      job = job.with_overrides(("optimizer.warmup_epochs", str(GPU_WARMUP_EPOCHS)))
    jobs.append(dataclasses.replace(job, name=rename(job.name), depends_on=rename(job.depends_on)))
  return jobs


SWEEPS: dict[str, Callable[[], list[Job]]] = {
    "ftwt_cifar10": ftwt_cifar10_jobs,
    "ftwt_imagenet": ftwt_imagenet_jobs,
    "fbs_condconv": fbs_condconv_jobs,
    "cpu_fbs_condconv": study_fbs_condconv_jobs,
    "cpu_fbs_variants": study_fbs_variant_jobs,
    "cpu_ftwt": study_ftwt_jobs,
    "cpu_convergence": study_convergence_jobs,
    "cpu_ftwt_budget": study_ftwt_budget_jobs,
    "cpu_ftwt_gates": study_ftwt_gate_jobs,
    "gpu_fbs_condconv": gpu_fbs_condconv_jobs,
    "gpu_ftwt": gpu_ftwt_jobs,
    "gpu_fbs_condconv_60ep": gpu_budget_jobs,
    "gpu_fbs_condconv_120ep": lambda: gpu_budget_jobs(epochs=120),
    "gpu_ftwt_warmup": gpu_ftwt_warmup_jobs,
}


def compared_rows(name: str) -> list[Job]:
  """Jobs of other sweeps that a study sweep's table and claims compare with.

  `cpu_fbs_variants` and `cpu_convergence` change one thing about rows of
  `cpu_fbs_condconv` (a tie rule, a predictor activation, the epochs); their
  tables show those rows beside them.
  """
  if name == "cpu_fbs_condconv":  # its rows' budget check (twice the epochs)
    return [job for job in study_convergence_jobs()
            if job.label in ("dense, 30 epochs", "FBS-CondConv d=0.25, 30 epochs")]
  if name == "gpu_fbs_condconv":
    return gpu_budget_jobs(epochs=60)
  if name == "cpu_fbs_variants":
    labels = ("FBS d=0.25", "FBS-CondConv d=0.25")
  elif name == "cpu_convergence":
    labels = ("dense", "FBS-CondConv d=0.25")
  elif name == "cpu_ftwt_budget":
    return [job for job in study_ftwt_jobs(archs=("vgg16_bn",))
            if "r=" in job.label or job.label.endswith(("baseline", "w=0.75"))]
  elif name in ("gpu_fbs_condconv_60ep", "gpu_fbs_condconv_120ep"):
    epochs = int(name.split("_")[-1].removesuffix("ep"))
    shorter = gpu_fbs_condconv_jobs() if epochs == 60 else gpu_budget_jobs(epochs=epochs // 2)
    # The shorter rows these rows check, and their own budget check.
    return [job for job in shorter
            if job.label.replace(f"{epochs // 2} epochs", f"{epochs} epochs")
            in {j.label for j in gpu_budget_jobs(epochs=epochs)}] + gpu_budget_jobs(
                epochs=2 * epochs)
  elif name == "cpu_ftwt_gates":
    return [job for job in study_ftwt_jobs(archs=("vgg16_bn",))
            if job.label.endswith(("r=0.85 decoupled", "static w=0.5", "static w=0.75"))]
  else:
    return []
  return [job for job in study_fbs_condconv_jobs() if job.label in labels]


def get_sweep(name: str) -> list[Job]:
  """The jobs of sweep `name`, dependencies first."""
  if name not in SWEEPS:
    raise ValueError(f"sweep must be one of {sorted(SWEEPS)}, got {name!r}")
  return SWEEPS[name]()
