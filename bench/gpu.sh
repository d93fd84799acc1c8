#!/usr/bin/env bash
# GPU figures of countnet on one GPU, with countnet and torch alone (no Ray): < 5 min on one H100.
#
#   bash bench/gpu.sh                 # on a GPU machine, from the repository root
#   bash bench/gpu.sh --cpu-check     # the same code paths on the CPU at a tiny size
#   options: --levels 1,2,4 (concurrent trials), --no-data (skip the generator part)
#
# 1. images/s of `simple` and resnet18 at 64x64, data on the device: fp32 vs bf16 autocast +
#    channels_last (bench/gpu_bench.py, through countnet.train.fit);
# 2. aggregate images/s of 1, 2 and 4 concurrent trials on one GPU (N `python -m countnet train`
#    processes: the share `gpu: 1, 0.5, 0.25` gives each trial);
# 3. the generator vs PIL on the GPU (bench/data.py --device cuda --quick);
# 4. nvidia-smi utilisation during each phase, and nvidia-smi itself at the end.
# Goal: 4 trials on one GPU give >= 3x the aggregate images/s of one.
# Writes bench/results/gpu.json (and data-cuda.json); --cpu-check writes gpu-cpu-check.json.
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3); OUT_DIR (results dir).
# countnet needs PyYAML. If the machine lacks it, a copy of the package carried to
# .venv/lib/python3*/site-packages/yaml (pure Python part) is put on PYTHONPATH automatically.
set -euo pipefail

cd "$(dirname "$0")/.."
CPU_CHECK=0
DATA=1
LEVELS="1,2,4"
TIME_LIMIT=290   # seconds for the whole script: keeps it under 5 minutes
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-check) CPU_CHECK=1; shift ;;
    --levels) LEVELS="$2"; shift 2 ;;
    --no-data) DATA=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
OUT_ARGS=()
if [[ -n "${OUT_DIR:-}" ]]; then OUT_ARGS=(--out-dir "$OUT_DIR"); fi

# PyYAML is countnet's only dependency beyond torch/tensorboard; borrow a carried copy if missing.
if ! "$PY" -c "import yaml" 2>/dev/null; then
  for dir in .venv/lib/python3*/site-packages; do
    if [[ -d "$dir/yaml" ]]; then
      shim="$(mktemp -d)"; ln -s "$(pwd)/$dir/yaml" "$shim/yaml"
      export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
      echo "PyYAML: using the copy in $dir"
      break
    fi
  done
fi
# Fail early with one clear line if anything countnet needs is missing; then name the machine.
echo "== machine"
"$PY" - <<'EOF'
import importlib.util, os, sys
missing = [m for m in ("torch", "torchvision", "yaml", "tensorboard", "PIL", "numpy")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"bench/gpu.sh: missing Python modules: {', '.join(missing)} (countnet needs them)")
import torch
import countnet.train  # noqa: F401  (imports without Ray)
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| GPU", gpu, "|",
      os.cpu_count(), "cores")
EOF
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv
fi

run() { timeout --foreground "$TIME_LIMIT" "$@"; }
start=$SECONDS
if [[ $CPU_CHECK == 1 ]]; then
  echo "== CPU check: the GPU code paths at a tiny size on the CPU (figures mean nothing)"
  run "$PY" bench/gpu_bench.py --cpu-check --levels "$LEVELS" ${OUT_ARGS[@]+"${OUT_ARGS[@]}"}
  if [[ $DATA == 1 ]]; then
    run "$PY" bench/data.py --tiny --device cpu ${OUT_ARGS[@]+"${OUT_ARGS[@]}"}
  fi
else
  if ! command -v nvidia-smi >/dev/null; then
    echo "bench/gpu.sh: no nvidia-smi, so no CUDA GPU here; use --cpu-check on a CPU" >&2
    exit 2
  fi
  echo "== throughput and concurrent trials"
  run "$PY" bench/gpu_bench.py --levels "$LEVELS" ${OUT_ARGS[@]+"${OUT_ARGS[@]}"}
  echo "== scene generator on the GPU vs PIL one by one"
  TIME_LIMIT=$(( 290 - (SECONDS - start) ))
  if [[ $DATA == 0 ]]; then
    echo "(skipped: --no-data)"
  elif (( TIME_LIMIT > 30 )); then
    run "$PY" bench/data.py --quick --device cuda ${OUT_ARGS[@]+"${OUT_ARGS[@]}"}
  else
    echo "(skipped: under 30 s left of the 5 minute budget)"
  fi
fi
if command -v nvidia-smi >/dev/null; then
  echo "== nvidia-smi"
  nvidia-smi
fi
echo "== done in $(( SECONDS - start )) s"
