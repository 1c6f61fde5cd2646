#!/usr/bin/env bash
# The study's full-width sweeps on one GPU inside a fixed time slot.
#
#   OUT=<folder> bash experiments/gpu_study.sh [seconds]
#
# Runs the sweeps of GPU_STUDY_SWEEPS ("sweep:parallel ...", default
# `gpu_fbs_condconv` (seed Table 2, M-CifarNet) with 6 jobs at once beside
# `gpu_ftwt` (VGG-16-BN) with 4) side by side on the one device (each process
# gets a share of its memory), starts no job after 75% of the slot (default
# 480 s) and stops the jobs still running at 92% of it. Then it recounts the
# finished FTWT rows' MACs in the paper's convention (that needs their
# checkpoints, which stay behind) and packs every run's small files into
# $OUT/gpu_results.tgz; `experiments.collect <sweep>` reads them once unpacked
# into results/.
#
# GPU_STUDY_ARGS adds `experiments.run` arguments to every sweep (e.g. `--only _s0`).
# Needs the CIFAR-10 subset at data/cifar10_subset.npz; Python packages the
# machine lacks can come as wheels in .whl/ (see docs/performance.md).
set -u
SLOT=${1:-480}
OUT=${OUT:-/tmp/gpu_study_out}
ROOT=${GPU_STUDY_ROOT:-/tmp/gpu_study}
DATA=${GPU_STUDY_DATA:-data/cifar10_subset.npz}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$ROOT"
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.08}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/gpu_study_jax_cache}
STOP=$((SLOT * 75 / 100))
KILL=$((SLOT * 92 / 100))
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1
} > "$OUT/env.txt"
cat "$OUT/env.txt"
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
  > "$OUT/gpu_util.csv" 2>&1 &)
SWEEPS=${GPU_STUDY_SWEEPS:-gpu_fbs_condconv:6 gpu_ftwt:4}
for entry in $SWEEPS; do
  $PY -m experiments.run "${entry%%:*}" --workdir_root="$ROOT" --data="$DATA" \
      --parallel "${entry##*:}" --stop_after "$STOP" --kill_after "$KILL" ${GPU_STUDY_ARGS:-} \
      > "$OUT/run_${entry%%:*}.log" 2>&1 &
done
wait
pkill -f "nvidia-smi --query-gpu" 2>/dev/null
grep -ho "^\[[a-z ]*\]" "$OUT"/run_*.log | sort | uniq -c
# The FTWT recount reads the trained checkpoints: do it here, before they go.
timeout $((SLOT - KILL + 40)) $PY -c "
from experiments import macs, sweeps
for sweep in '${SWEEPS}'.split():
  for job in sweeps.get_sweep(sweep.split(':')[0]):
    if job.depends_on:
      try:
        macs.recount_job(job, '$ROOT', '$DATA')
      except Exception as e:  # unfinished runs have nothing to count
        print(job.name, type(e).__name__, str(e)[:200])
" > "$OUT/recount.log" 2>&1
(cd "$ROOT" && find . -maxdepth 2 -type f \( -name '*.json' -o -name '*.jsonl' -o -name train.log \) \
  -print0 | tar czf "$OUT/gpu_results.tgz" --null -T -)
ls -la "$OUT"
