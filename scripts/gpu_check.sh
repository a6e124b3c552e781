#!/usr/bin/env bash
# One GPU visit: environment, GPU tests, correctness vs transformers, then benchmarks.
# Full logs land in $OUT (or ./gpu_out); the short tables print last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
STAGES=${STAGES:-"env tests hf graph"}
for stage in $STAGES; do
  case $stage in
    env) nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/env.txt"
         python3 -c "import torch, triton, transformers; print(torch.__version__, torch.version.cuda, triton.__version__, transformers.__version__)" | tee -a "$OUT/env.txt" ;;
    tests) python3 -m pytest -q -m cuda -p no:cacheprovider tests/ 2>&1 | tee "$OUT/tests_cuda.log" | tail -25 ;;
    kernels) python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tee "$OUT/tests_kernels.log" | tail -15 ;;
    hf) python3 scripts/check_vs_transformers.py --out "$OUT/vs_transformers.json" 2>&1 | tee "$OUT/vs_transformers.log" | grep '^{' ;;
    diag) python3 scripts/diag_graph_vs_eager.py 2>&1 | tee "$OUT/diag.log" ;;
    graph) python3 scripts/bench_graph.py --out "$OUT/bench_graph.json" 2>&1 | tee "$OUT/bench_graph.log" | tail -6 ;;
    *) echo "unknown stage $stage" ;;
  esac
done
