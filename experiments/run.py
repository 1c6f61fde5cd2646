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

On an accelerator, `--parallel N` keeps N jobs running at once (a job starts
once the job it starts from has finished; give each process a share of the
device memory, e.g. `XLA_PYTHON_CLIENT_MEM_FRACTION`), `--stop_after S`
starts no job after S seconds and `--kill_after K` stops (SIGTERM) the jobs
still running after K seconds, leaving them unfinished (no `run.json`), so a
run inside a fixed time slot ends on time:

  python -m experiments.run gpu_fbs_condconv --workdir_root=workdirs \
      --data=data/cifar10_subset.npz --parallel 6 --stop_after 380 --kill_after 470
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
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


def start_job(argv: list[str], workdir: str) -> subprocess.Popen:
  """Starts one job in the background, logging to `workdir/train.log`."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOG_FILE), "a", encoding="utf-8") as log:
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def record_job(argv: list[str], workdir: str, code: int, started: float) -> None:
  """Writes the finished job's `run.json`."""
  # The interpreter's own path says nothing about the run; record `python`.
  record = {"command": shlex.join(["python", *argv[1:]]), "returncode": code,
            "seconds": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
  with open(os.path.join(workdir, RUN_RECORD), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)


def run_job(argv: list[str], workdir: str) -> int:
  """Runs one job, logging to `workdir/train.log`; writes `run.json`."""
  started = time.time()
  code = start_job(argv, workdir).wait()
  record_job(argv, workdir, code, started)
  return code


def run_parallel(plan: Sequence[tuple[sweeps.Job, list[str], str]], parallel: int,
                 stop_after: float | None = None, kill_after: float | None = None,
                 poll_seconds: float = 1.0) -> list[str]:
  """Runs `(job, argv, workdir)` entries with up to `parallel` at once.

  Entries start in order, each once the entry it depends on (if it is in
  `plan`) has finished successfully; the dependants of a failed job are
  dropped. No entry starts after `stop_after` seconds; entries still running
  after `kill_after` seconds get SIGTERM and stay unfinished (no `run.json`).

  Returns:
    the names of the jobs that failed, were dropped, stopped or never started.
  """
  begin = time.time()
  pending = list(plan)
  names = {job.name for job, _, _ in plan}
  finished, failed, running = set(), [], {}
  while pending or running:
    elapsed = time.time() - begin
    for name, (process, argv, workdir, started) in list(running.items()):
      code = process.poll()
      if code is None:
        continue
      del running[name]
      record_job(argv, workdir, code, started)
      print(f"[done] {name}: exit {code} ({time.time() - started:.0f} s)", flush=True)
      if code == 0:
        finished.add(name)
      else:
        failed.append(name)
    if kill_after is not None and elapsed > kill_after and running:
      for name, (process, _, _, _) in running.items():
        print(f"[stop] {name}: still running after {kill_after:.0f} s", flush=True)
        process.send_signal(signal.SIGTERM)
        failed.append(name)
      for process, _, _, _ in running.values():
        try:
          process.wait(timeout=30)
        except subprocess.TimeoutExpired:
          process.kill()
      running.clear()
    if stop_after is not None and elapsed > stop_after:
      for job, _, _ in pending:
        print(f"[not started] {job.name}: {stop_after:.0f} s passed", flush=True)
        failed.append(job.name)
      pending = []
    for entry in list(pending):
      if len(running) >= parallel:
        break
      job, argv, workdir = entry
      if job.depends_on in names and job.depends_on not in finished:
        if job.depends_on in failed:
          print(f"[dropped] {job.name}: {job.depends_on} failed", flush=True)
          failed.append(job.name)
          pending.remove(entry)
        continue
      pending.remove(entry)
      print(f"[run] {job.name}: {shlex.join(argv)}", flush=True)
      running[job.name] = (start_job(argv, workdir), argv, workdir, time.time())
    if pending or running:
      time.sleep(poll_seconds)
  return failed


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
  parser.add_argument("--parallel", type=int, default=1,
                      help="jobs running at once (each waits for the job it starts from)")
  parser.add_argument("--stop_after", type=float, default=None,
                      help="seconds after which no job starts")
  parser.add_argument("--kill_after", type=float, default=None,
                      help="seconds after which running jobs are stopped, unfinished")
  args = parser.parse_args(argv)
  if args.parallel < 1:
    parser.error(f"--parallel must be at least 1, got {args.parallel}")

  jobs = select(sweeps.get_sweep(args.sweep), args.only)
  extra = parse_set(args.set)
  failed, plan = [], []
  begin = time.time()
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
    if args.parallel > 1 or args.kill_after is not None:
      plan.append((job, command, workdir))
      continue
    if args.stop_after is not None and time.time() - begin > args.stop_after:
      print(f"[not started] {job.name}: {args.stop_after:.0f} s passed", flush=True)
      failed.append(job.name)
      continue
    print(f"[run] {job.name}: {shlex.join(command)}", flush=True)
    code = run_job(command, workdir)
    print(f"[done] {job.name}: exit {code}", flush=True)
    if code:
      failed.append(job.name)
  if plan:
    failed += run_parallel(plan, args.parallel, args.stop_after, args.kill_after)
  if failed:
    print(f"failed jobs: {failed}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
