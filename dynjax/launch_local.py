"""Start N local processes of a multi-process dynjax job over loopback.

    python -m dynjax.launch_local --num_processes=2 --devices_per_process=2 -- \\
        --config=configs/quickstart.py --workdir=/tmp/run

runs `python -m dynjax.main <args after -->` N times on this machine, each a
JAX process with `devices_per_process` CPU devices, joined into one job over
127.0.0.1 (gloo collectives). Each line of output is prefixed with `[pK]`. If a
process fails, the others are stopped and the launcher exits with that
process's code; `--timeout` bounds the whole job. This exercises exactly what a
TPU pod or multi-node GPU run does (one process per host), on one machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

from dynjax import distributed


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _forward(stream, prefix: str, sink) -> None:
  for line in iter(stream.readline, b""):
    sink.write(f"{prefix} {line.decode(errors='replace')}")
    sink.flush()
  stream.close()


def launch(command: list[str], num_processes: int, devices_per_process: int = 1,
           port: int = 0, timeout: float | None = None, env: dict | None = None,
           sink=None) -> int:
  """Runs `command` as `num_processes` cooperating processes; returns the exit code.

  Args:
    command: the argv of one process (e.g. `[sys.executable, "-m", "dynjax.main", ...]`).
    num_processes: N >= 1.
    devices_per_process: fake CPU devices each process gets.
    port: coordinator port on 127.0.0.1; 0 picks a free one.
    timeout: seconds before every process is killed (exit code 124).
    env: extra environment for every process.
    sink: where prefixed output goes (default stdout).
  """
  if num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}")
  sink = sink or sys.stdout
  port = port or free_port()
  procs, threads = [], []
  for pid in range(num_processes):
    penv = dict(os.environ, **(env or {}))
    penv.update({
        distributed.ENV_COORDINATOR: f"127.0.0.1:{port}",
        distributed.ENV_NUM_PROCESSES: str(num_processes),
        distributed.ENV_PROCESS_ID: str(pid),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
        "PYTHONUNBUFFERED": "1",
    })
    proc = subprocess.Popen(command, env=penv, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    thread = threading.Thread(target=_forward, args=(proc.stdout, f"[p{pid}]", sink), daemon=True)
    thread.start()
    procs.append(proc)
    threads.append(thread)
  deadline = None if timeout is None else time.monotonic() + timeout
  code = 0
  while True:
    codes = [p.poll() for p in procs]
    failed = [c for c in codes if c not in (None, 0)]
    if failed:
      code = failed[0]
      break
    if all(c == 0 for c in codes):
      break
    if deadline is not None and time.monotonic() > deadline:
      sink.write(f"launch_local: timed out after {timeout:.0f}s\n")
      code = 124
      break
    time.sleep(0.2)
  if code != 0:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p in procs:
    p.wait()
  for t in threads:
    t.join(timeout=5)
  if code != 0:
    sink.write(f"launch_local: job failed (exit code {code})\n")
  return code


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if "--" in argv:
    split = argv.index("--")
    own, rest = argv[:split], argv[split + 1:]
  else:
    own, rest = argv, []
  parser = argparse.ArgumentParser(prog="python -m dynjax.launch_local",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1)
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0 = a free one)")
  parser.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
  parser.add_argument("--module", default="dynjax.main", help="python module each process runs")
  args = parser.parse_args(own)
  command = [sys.executable, "-m", args.module, *rest]
  return launch(command, args.num_processes, args.devices_per_process, args.port, args.timeout)


if __name__ == "__main__":
  sys.exit(main())
