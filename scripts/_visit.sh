#!/usr/bin/env bash
set -uo pipefail
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
O=${OUT:-/tmp/out}; mkdir -p $O/r
timeout 250 python3 scripts/profile_step.py --ab --no-profile --repeat 3 --prompt 256 --steps 100 --capacity 2048 --model meta-llama/Llama-3.2-1B-Instruct --settings default \
  --setting 'o_down::RUNTIME_RESIDUAL_ADD=o,down' --out $O/r/ab_down_add_llama.json > $O/r/ab_down_add_llama.log 2>&1
grep '^|' $O/r/ab_down_add_llama.log
