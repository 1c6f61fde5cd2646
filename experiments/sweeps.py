"""Named sweeps: the jobs that regenerate each paper table.

A `Job` is one `python -m dynjax.main` run: a config file with its argument,
a workdir name, extra `--config.*` overrides and the paper's number for that
row. `SWEEPS[name]()` builds the job list; the reduced-scale sweeps reuse the
paper jobs with a shortened recipe (fewer epochs, narrower nets) so that they
run on a CPU.
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
  """

  name: str
  config: str
  arg: str
  overrides: tuple[tuple[str, str], ...] = ()
  series: str = ""
  label: str = ""
  paper: paper.PaperResult | None = None
  depends_on: str | None = None

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


# The shortened CPU recipe of docs/results.md, sized so that all ten jobs fit
# in about an hour on two shared CPU cores: quarter-width networks, 3 epochs
# (M-CifarNet at batch 128; VGG-16-BN FTWT: 3-epoch baseline, then 3-epoch
# dynamic runs with the milestones scaled from 200 epochs). Everything else is
# the paper recipe of the config.
REDUCED_FBS_EPOCHS = 3
REDUCED_FBS_WIDTH = 0.25
REDUCED_LONG_FBS_EPOCHS = 6
REDUCED_FTWT_EPOCHS = 3
REDUCED_FTWT_WIDTH = 0.25
REDUCED_FTWT_RS = (0.92, 0.85)


def _reduced(job: Job, *pairs: tuple[str, str], prefix: str = "reduced_") -> Job:
  """`job` under a shortened recipe, in its own `<prefix>*` workdir."""
  depends = f"{prefix}{job.depends_on}" if job.depends_on else None
  return dataclasses.replace(job.with_overrides(*pairs), name=f"{prefix}{job.name}",
                             depends_on=depends)


def reduced_fbs_condconv_jobs() -> list[Job]:
  """M-CifarNet dense, SCP, FBS, FBS-CondConv at d = 0.5 and 0.3, shortened."""
  jobs = fbs_condconv_jobs(methods=("scp", "fbs", "fbs_condconv"), densities=(0.5, 0.3))
  return [_reduced(j, ("num_epochs", str(REDUCED_FBS_EPOCHS)),
                      ("model_kwargs.width_multiplier", str(REDUCED_FBS_WIDTH)),
                      ("batch_size", "128"), ("eval_batch_size", "128"))
          for j in jobs]


def reduced_fbs_condconv_long_jobs() -> list[Job]:
  """The same seven runs, twice as long (6 epochs) and without Cutout.

  Cutout 18 regularises a 480-epoch run; in a few epochs it mostly slows
  learning, so this second pass drops it to give the comparison a better
  trained base (docs/results.md).
  """
  jobs = fbs_condconv_jobs(methods=("scp", "fbs", "fbs_condconv"), densities=(0.5, 0.3))
  return [_reduced(j, ("num_epochs", str(REDUCED_LONG_FBS_EPOCHS)),
                   ("model_kwargs.width_multiplier", str(REDUCED_FBS_WIDTH)),
                   ("batch_size", "128"), ("eval_batch_size", "128"), ("dataset.cutout", "0"),
                   prefix="reduced_long_")
          for j in jobs]


def reduced_ftwt_jobs() -> list[Job]:
  """Quarter-width VGG-16-BN: dense baseline and decoupled FTWT at two r."""
  rows = tuple(("vgg16_bn", r, "decoupled") for r in REDUCED_FTWT_RS)
  jobs = ftwt_cifar10_jobs(archs=("vgg16_bn",), rows=rows)
  milestones = scaled_milestones((81, 122, 151), REDUCED_FTWT_EPOCHS, 200)
  return [_reduced(j, ("num_epochs", str(REDUCED_FTWT_EPOCHS)),
                      ("model_kwargs.width_multiplier", str(REDUCED_FTWT_WIDTH)),
                      ("optimizer.milestones", milestones))
          for j in jobs]


SWEEPS: dict[str, Callable[[], list[Job]]] = {
    "ftwt_cifar10": ftwt_cifar10_jobs,
    "ftwt_imagenet": ftwt_imagenet_jobs,
    "fbs_condconv": fbs_condconv_jobs,
    "reduced_fbs_condconv": reduced_fbs_condconv_jobs,
    "reduced_fbs_condconv_long": reduced_fbs_condconv_long_jobs,
    "reduced_ftwt": reduced_ftwt_jobs,
}


def get_sweep(name: str) -> list[Job]:
  """The jobs of sweep `name`, dependencies first."""
  if name not in SWEEPS:
    raise ValueError(f"sweep must be one of {sorted(SWEEPS)}, got {name!r}")
  return SWEEPS[name]()
