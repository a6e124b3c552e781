#!/usr/bin/env bash
set -uo pipefail
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
O=${OUT:-/tmp/out}; mkdir -p $O/r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $O/r/env.txt
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_fused_mlp.py tests/test_fused_linear.py -k "not interpreter and (mlp or fixed or test_norm_linear)" -x 2>&1 | tail -5 | tee $O/r/tests.log
for M in meta-llama/Llama-3.2-1B-Instruct Qwen/Qwen3-1.7B google/gemma-3-1b-it; do
  n=$(basename $M)
  timeout 140 python3 scripts/profile_step.py --ab --no-profile --repeat 2 --prompt 256 --steps 100 --capacity 2048 --model $M --settings default \
    --setting 'f16x256::RUNTIME_FUSED_MLP=1' \
    --setting 'f16x512w8::RUNTIME_FUSED_MLP=1' --setting 'f16x512w8::RUNTIME_MLP_BLOCKS=mlp:8192x2048=16/512/512/8 mlp:6144x2048=16/512/512/8 mlp:6912x1152=16/512/512/8' \
    --setting 'f32x128::RUNTIME_FUSED_MLP=1' --setting 'f32x128::RUNTIME_MLP_BLOCKS=mlp:8192x2048=32/128/256/4 mlp:6144x2048=32/128/256/4 mlp:6912x1152=32/128/256/4' \
    --setting 'f32x256w8::RUNTIME_FUSED_MLP=1' --setting 'f32x256w8::RUNTIME_MLP_BLOCKS=mlp:8192x2048=32/256/256/8 mlp:6144x2048=32/256/256/8 mlp:6912x1152=32/256/256/8' \
    --setting 'f64x128w8::RUNTIME_FUSED_MLP=1' --setting 'f64x128w8::RUNTIME_MLP_BLOCKS=mlp:8192x2048=64/128/128/8 mlp:6144x2048=64/128/128/8 mlp:6912x1152=64/128/128/8' \
    --out $O/r/ab_mlp_$n.json > $O/r/ab_mlp_$n.log 2>&1
  grep '^|' $O/r/ab_mlp_$n.log
done
cd $O && tar czf r.tgz r
