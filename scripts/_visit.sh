#!/usr/bin/env bash
set -uo pipefail
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT/v"
nvidia-smi --query-gpu=name,driver_version --format=csv | tail -1
ab() {  # model prompt repeat tag
  timeout 150 python3 scripts/profile_step.py --ab --no-profile --repeat "$3" --prompt "$2" --steps 100 --capacity 2048 --model "$1" \
    --settings default --setting 'long16::RUNTIME_ATTN_LONG_BLOCK_N=16' --setting 'nolong::RUNTIME_LONG_GRAPHS=0' --out "$OUT/v/ab_$4.json" > "$OUT/v/ab_$4.log" 2>&1
  grep '^|' "$OUT/v/ab_$4.log" | grep -v -- '---' | grep -v setting
}
for p in 600 1100 1900; do ab Qwen/Qwen3-1.7B $p 2 long16_qwen3_p$p; done
tar czf "$OUT/v.tgz" -C "$OUT" v
