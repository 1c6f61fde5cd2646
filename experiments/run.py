r"""Run a named sweep locally, one job after another, or print its commands.

  python -m experiments.run fbs_condconv --print          # commands for a cluster
  python -m experiments.run cpu_fbs_condconv --workdir_root=results \
      --data=<path to cifar10_subset.npz>                  # run here, in order
  python -m experiments.run ftwt_cifar10 --only='vgg16_bn' --set num_epochs=2

Each job trains into `<workdir_root>/<job name>` with its output in
`train.log` there; a finished job leaves `run.json` (command, exit code,
seconds) and is skipped on the next invocation unless `--force` (which
deletes its workdir and trains it again from scratch). Jobs that
start from another job's workdir (FTWT fine-tuning) get
`--config.init_from=<workdir_root>/<that job>` and come after it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Sequence

from experiments import sweeps

RUN_RECORD = "run.json"
LOG_FILE = "train.log"


def job_overrides(job: sweeps.Job, workdir_root: str, data: str | None = None,
                  extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
  """All `--config.*` overrides of `job`: its own, the dependency, data, extras."""
  pairs = list(job.overrides)
  if job.depends_on:
    pairs.append(("init_from", os.path.join(workdir_root, job.depends_on)))
  if data:
    pairs += [("dataset.name", "npz"), ("dataset.path", data)]
  pairs += list(extra)
  return pairs


def job_command(job: sweeps.Job, workdir_root: str, data: str | None = None,
                extra: Sequence[tuple[str, str]] = (), python: str = "python") -> list[str]:
  """The argv that trains `job` (run from the repository root)."""
  argv = [python, "-m", "dynjax.main", f"--config={job.config}:{job.arg}",
          f"--workdir={os.path.join(workdir_root, job.name)}"]
  argv += [f"--config.{key}={value}" for key, value in job_overrides(job, workdir_root, data, extra)]
  return argv


def select(jobs: list[sweeps.Job], pattern: str | None) -> list[sweeps.Job]:
  """Jobs whose name matches the regular expression `pattern` (all if None)."""
  if not pattern:
    return jobs
  regex = re.compile(pattern)
  return [j for j in jobs if regex.search(j.name)]


def is_finished(workdir: str) -> bool:
  """True when `run.json` in `workdir` records a successful run."""
  path = os.path.join(workdir, RUN_RECORD)
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8") as f:
    return json.load(f).get("returncode") == 0


def checkpoint_needed_by(job: sweeps.Job, jobs: Sequence[sweeps.Job], workdir_root: str) -> str:
  """The first unfinished job of `jobs` that starts from `job`'s checkpoint
  when that checkpoint no longer exists ('' otherwise).

  Committed study results keep each run's small files but not its
  checkpoints, so a dependency finished in an earlier session must be trained
  again before the runs that start from it.
  """
  if os.path.isdir(os.path.join(workdir_root, job.name, "checkpoints")):
    return ""
  for other in jobs:
    if other.depends_on == job.name and not is_finished(os.path.join(workdir_root, other.name)):
      return other.name
  return ""


def run_job(argv: list[str], workdir: str) -> int:
  """Runs one job, logging to `workdir/train.log`; writes `run.json`."""
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  with open(os.path.join(workdir, LOG_FILE), "a", encoding="utf-8") as log:
    code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
  # The interpreter's own path says nothing about the run; record `python`.
  record = {"command": shlex.join(["python", *argv[1:]]), "returncode": code,
            "seconds": round(time.time() - start, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
  with open(os.path.join(workdir, RUN_RECORD), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  return code


def parse_set(items: Sequence[str]) -> list[tuple[str, str]]:
  """`["num_epochs=2"]` -> `[("num_epochs", "2")]`."""
  pairs = []
  for item in items:
    if "=" not in item:
      raise ValueError(f"--set expects key=value (a config field), got {item!r}")
    key, value = item.split("=", 1)
    pairs.append((key.removeprefix("config."), value))
  return pairs


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("sweep", choices=sorted(sweeps.SWEEPS))
  parser.add_argument("--workdir_root", default="workdirs")
  parser.add_argument("--data", default=None,
                      help="an .npz with x_train, y_train, x_test, y_test instead of the "
                           "configs' dataset")
  parser.add_argument("--only", default=None, help="regular expression on job names")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="extra config override for every job (repeatable)")
  parser.add_argument("--print", action="store_true", help="print the commands, run nothing")
  parser.add_argument("--force", action="store_true",
                      help="rerun finished jobs from scratch (deletes their workdir first; "
                           "otherwise the trainer would resume from the final checkpoint)")
  parser.add_argument("--python", default=sys.executable)
  args = parser.parse_args(argv)

  jobs = select(sweeps.get_sweep(args.sweep), args.only)
  extra = parse_set(args.set)
  failed = []
  for job in jobs:
    workdir = os.path.join(args.workdir_root, job.name)
    command = job_command(job, args.workdir_root, args.data, extra,
                          "python" if args.print else args.python)
    if args.print:
      print(shlex.join(command))
      continue
    if is_finished(workdir):
      waiting = checkpoint_needed_by(job, jobs, args.workdir_root)
      if not args.force and not waiting:
        print(f"[skip] {job.name}: finished ({RUN_RECORD} present)", flush=True)
        continue
      if waiting:
        print(f"[rerun] {job.name}: finished, but its checkpoint, which {waiting} starts from, "
              "is gone (committed results keep no checkpoints)", flush=True)
      shutil.rmtree(workdir)
    print(f"[run] {job.name}: {shlex.join(command)}", flush=True)
    code = run_job(command, workdir)
    print(f"[done] {job.name}: exit {code}", flush=True)
    if code:
      failed.append(job.name)
  if failed:
    print(f"failed jobs: {failed}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
