"""One prepared check of dynjax on an accelerator; prints a markdown report.

Usage (from the repository root; see docs/performance.md#device-check for
the wheels to bring and the timeout):

  python benchmarks/device_check.py --data data/cifar10_subset.npz --out device_report.md

Sections, in this order, each bounded so the whole check fits in about
7 minutes on one H200 (`--budget` seconds; a section that would start after
the budget is listed as skipped):

1. Device and versions.
2. A short real training run: `python -m dynjax.main` with the committed
   CPU study's dense M-CifarNet recipe (`results/cpu_fbs_condconv_dense_s0`,
   15 epochs on the CIFAR-10 subset), compared with the CPU runs' seeds.
3. ResNet-18 at 224x224, one training step of the library (dense, FBS d=0.5,
   FTWT r=0.9, CondConv n=4), in bf16 (f32 runs last, after section 4): step time, images/s, XLA's peak
   memory estimate, the device's peak memory, model TFLOP/s and MFU against
   the chip's bf16 dense peak (`benchmarks/train_step.py`).
4. The sparse executor on M-CifarNet at batch 1 and 64: FBS d=0.5 and FTWT
   r=0.9 against the masked model, dense and the static network
   (`benchmarks/inference.py`).

Needs only jax, flax, optax, orbax-checkpoint, numpy and ml-collections;
TensorFlow, tfds and clu are not used.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

# bf16 dense peak in TFLOP/s by device kind (datasheet figures, no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0,
                    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0}
REFERENCE_RUN = "cpu_fbs_condconv_dense_s0"


def peak_tflops(device_kind: str) -> float:
  for name, peak in PEAK_BF16_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return peak
  return 0.0


def versions() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  lines = [f"- python {platform.python_version()} on {platform.machine()}"]
  for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "ml_collections"):
    try:
      module = __import__(name, fromlist=["__version__"])
      lines.append(f"- {name} {getattr(module, '__version__', '?')}")
    except ImportError:
      lines.append(f"- {name}: not installed")
  devices = jax.devices()
  lines.append(f"- backend `{jax.default_backend()}`, {len(devices)} device(s): "
               f"{', '.join(sorted({d.device_kind for d in devices}))}")
  return "\n".join(lines)


def device_peak_memory_gib() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return "n/a" if peak is None else f"{peak / 2**30:.2f} GiB"


def reference_command(data: str, workdir: str) -> tuple[list[str], dict]:
  """The committed CPU run's command, pointed at `data` and `workdir`."""
  with open(os.path.join(ROOT, "results", REFERENCE_RUN, "run.json")) as f:
    command = json.load(f)["command"].split()
  argv = [sys.executable] + command[1:]
  argv = [a for a in argv if not a.startswith(("--workdir=", "--config.dataset.path="))]
  argv += [f"--workdir={workdir}", f"--config.dataset.path={data}"]
  runs = sorted(glob.glob(os.path.join(ROOT, "results", REFERENCE_RUN[:-1] + "*",
                                       "results.json")))
  cpu = [json.load(open(p))["top1"] for p in runs]
  return argv, {"cpu_top1": cpu}


def training_run(data: str, timeout: float, quick: bool = False) -> str:
  if not os.path.exists(data):
    return (f"skipped: {data} not found (copy the CIFAR-10 subset into an ignored folder "
            "and carry it)")
  with tempfile.TemporaryDirectory() as workdir:
    argv, ref = reference_command(data, workdir)
    if quick:
      argv += ["--config.max_train_steps=10", "--config.count_flops=False"]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
      return f"failed (exit {proc.returncode}):\n\n```\n{proc.stderr[-3000:]}\n```"
    result = json.load(open(os.path.join(workdir, "results.json")))
  if quick:
    return f"quick run finished: top-1 {100 * result['top1']:.2f}% after 10 steps (not compared)"
  cpu = ref["cpu_top1"]
  mean = statistics.mean(cpu)
  sd = statistics.stdev(cpu) if len(cpu) > 1 else float("nan")
  top1 = result["top1"]
  within = abs(top1 - mean) <= max(2 * sd, 0.03)
  return "\n".join([
      f"`{' '.join(['python'] + argv[1:])}`", "",
      f"- wall time {seconds:.0f} s (compile included)",
      f"- top-1 {100 * top1:.2f}% vs the CPU runs' {100 * mean:.2f}% (sd {100 * sd:.2f}, "
      f"{len(cpu)} seeds: {', '.join(f'{100 * c:.2f}' for c in cpu)})",
      f"- **{'matches' if within else 'does NOT match'}** the CPU runs within "
      "max(2 sd, 3 points)"])


def captured(fn, argv) -> str:
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    fn(argv)
  return buffer.getvalue().strip()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default="data/cifar10_subset.npz")
  parser.add_argument("--out", default="", help="also write the report here")
  parser.add_argument("--budget", type=float, default=420.0,
                      help="seconds; sections that would start later are skipped")
  parser.add_argument("--batch", type=int, default=128, help="ResNet-18 training batch")
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes (a CPU smoke test of the script itself)")
  args = parser.parse_args(argv)

  import jax  # pylint: disable=import-outside-toplevel
  import inference  # pylint: disable=import-outside-toplevel
  import train_step  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  kind = jax.devices()[0].device_kind
  peak = peak_tflops(kind)
  report = [f"# dynjax device check: {kind}", "", versions(), ""]

  def section(title, body_fn):
    elapsed = time.perf_counter() - start
    report.append(f"## {title}\n")
    if elapsed > args.budget:
      report.append(f"skipped: {elapsed:.0f} s elapsed, over the {args.budget:.0f} s budget\n")
      return
    t0 = time.perf_counter()
    try:
      report.append(body_fn())
    except Exception as e:  # pylint: disable=broad-except
      report.append(f"failed: `{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}`")
    report.append(f"\n({time.perf_counter() - t0:.0f} s)\n")
    print("\n".join(report[-3:]), flush=True)

  if args.quick:
    model, size, batch, policies = "mcifarnet", "32", "8", ["dense", "fbs"]
  else:
    model, size, batch, policies = "resnet18", "224", str(args.batch), [
        "dense", "fbs", "ftwt", "condconv"]

  section("Training run (CIFAR-10 subset, CPU study recipe)",
          lambda: training_run(args.data, max(60.0, args.budget * 0.4), args.quick))
  def step_section(dtype):
    section(f"{model} training step, {size}x{size}, batch {batch}, {dtype}", lambda dtype=dtype: (
        captured(train_step.main, ["--models", model, "--input", size, "--batch", batch,
                                   "--dtype", dtype, "--policies", *policies,
                                   "--repeats", "5" if not args.quick else "1",
                                   "--rounds", "2" if not args.quick else "1",
                                   "--peak_tflops", str(peak)])
        + f"\n\nDevice peak memory so far: {device_peak_memory_gib()}"
        + ("" if peak else "\n\n(no bf16 peak known for this device kind: no MFU column)")))

  # bf16 first and the executor before f32: if compiles run long, the
  # budget cuts the least important section.
  step_section("bfloat16")
  section("Sparse executor, M-CifarNet, float32", lambda: captured(inference.main, [
      "--model", "mcifarnet", "--batch", *(["1"] if args.quick else ["1", "64"]),
      "--methods", *(["fbs"] if args.quick else ["fbs", "ftwt"]),
      "--densities", "0.5", "--repeats", "20" if not args.quick else "2",
      "--rounds", "2" if not args.quick else "1"]
      + (["--width", "0.25"] if args.quick else [])))

  step_section("float32")

  report.append(f"Total {time.perf_counter() - start:.0f} s.")
  text = "\n".join(report)
  print("\n\n" + text, flush=True)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
