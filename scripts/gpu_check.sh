#!/usr/bin/env bash
# One GPU visit: environment, GPU tests, correctness vs transformers, then benchmarks.
# STAGES picks what runs (default: all, in this order). Full logs land in $OUT (or ./gpu_out);
# each stage prints its short table last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
STAGES=${STAGES:-"env kernels tests hf diag graph kbench chat"}
FULL_DIR=${FULL_DIR:-full-$(date +%Y%m%d)}
# the embedded GGUF is too big to travel: pass a folder with SmolLM2's config and tokenizer and
# random weights, e.g. CHAT_ARGS="--model .smol --weights random"
read -r -a CHAT_ARGS <<< "${CHAT_ARGS:-}"
for stage in $STAGES; do
  echo "=== $stage"
  case $stage in
    env) nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/env.txt"
         python3 -c "import torch, triton, transformers; print(torch.__version__, torch.version.cuda, triton.__version__, transformers.__version__)" | tee -a "$OUT/env.txt" ;;
    kernels) python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tee "$OUT/tests_kernels.log" | tail -8 ;;
    tests) timeout "${TESTS_S:-300}" python3 -m pytest -q -m cuda -p no:cacheprovider tests/ --deselect tests/test_kernels.py 2>&1 | tee "$OUT/tests_cuda.log" | tail -12 ;;
    hf) python3 scripts/check_vs_transformers.py --out "$OUT/vs_transformers.json" 2>&1 | tee "$OUT/vs_transformers.log" | grep '^{' ;;
    diag) python3 scripts/diag_loop.py 2>&1 | grep -v -i warn | tee "$OUT/diag_loop.log" ;;
    graph) RUNTIME_KERNELS=torch python3 scripts/bench_graph.py --out "$OUT/graph_torch.json" 2>&1 | tee "$OUT/graph_torch.log" | tail -5
           python3 scripts/bench_graph.py --out "$OUT/graph_triton.json" 2>&1 | tee "$OUT/graph_triton.log" | tail -5 ;;
    # the step's kernels and the model and graph checks that cover them
    steptests) timeout "${TESTS_S:-300}" python3 -m pytest -q -p no:cacheprovider tests/test_step_inputs.py tests/test_step_tail.py \
                 tests/test_kernels_sampling.py tests/test_graphs_cuda.py tests/test_prefill_graphs.py tests/test_model_vs_hf.py \
                 tests/test_kernels.py -k "${STEP_K:-not interpreter}" 2>&1 | tee "$OUT/tests_step.log" | tail -8 ;;
    newkernels) timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_fused_linear.py tests/test_kernels_sampling.py \
                  tests/test_kernels.py -k "${NEW_K:-not interpreter and (fused or sampl or argmax or top or model_logits or dispatch or norm or act or qkv_decode)}" 2>&1 | tee "$OUT/tests_new_kernels.log" | tail -8 ;;
    # same-process A/B of the kernel settings (greedy and topk step), then the goal rows under the fastest
    ab) python3 scripts/profile_step.py --ab ${AB_FLAGS:-} ${AB_SETTINGS:+--settings "$AB_SETTINGS"} --steps 150 --profiled 10 --out "$OUT/profile.json" 2>&1 | tee "$OUT/profile.log" | tail -40 ;;
    goals) best=$(python3 scripts/profile_step.py --best-from "$OUT/profile_ab.json" 2>/dev/null); echo "fastest setting: $best"
           env $best timeout 300 python3 -m runtime.cli bench configs/goals.yaml --out "results/${GOALS_DIR:-goals}" 2>&1 \
             | tee "$OUT/goals.log" | grep -v '^{' | tail -45
           mkdir -p "$OUT/goals" && cp "results/${GOALS_DIR:-goals}"/*.{json,jsonl,md,csv} "$OUT/goals/" 2>/dev/null ;;
    # bytecode caching allowed, as in an installed environment (this machine sets PYTHONDONTWRITEBYTECODE=1)
    # STARTUP_ARGS e.g. "--fresh-triton-cache --prebuild 0,1 --loaders safetensors": a fresh machine's first start, with and without the pre-build
    startup) timeout "${STARTUP_S:-240}" env -u PYTHONDONTWRITEBYTECODE python3 scripts/startup_check.py ${STARTUP_ARGS:-} 2>&1 | tee "$OUT/startup.log" | grep '^{' ;;
    prefill) timeout 150 python3 scripts/profile_prefill.py --out "$OUT/profile_prefill.json" 2>&1 | tee "$OUT/profile_prefill.log" | tail -6 ;;
    profile) python3 scripts/profile_step.py --out "$OUT/profile_step.json" 2>&1 | tee "$OUT/profile_step.log" | tail -60 ;;
    barrier) timeout 120 python3 scripts/bench_grid_barrier.py --out "$OUT/grid_barrier.json" 2>&1 | tee "$OUT/grid_barrier.log" | tail -5 ;;
    # the step's kernels in launch order, then each layer's kernels against their bytes at copy speed
    timeline) timeout 240 python3 scripts/step_timeline.py --batch 1 --batch 16 --out "$OUT/timeline.json" 2>&1 | tee "$OUT/timeline.log" | grep -v -i warn | tail -60
              python3 scripts/layer_budget.py "$OUT/timeline.json" --out "$OUT/layer_budget.md" | grep -E '^(###|for|\| \*\*layer)' ;;
    # where the attention and GEMV kernels' programs spend their time (the phase clock), after its tests
    phases) python3 -m pytest -q -p no:cacheprovider tests/test_phase_clock.py 2>&1 | tail -2
            timeout 300 python3 scripts/kernel_phases.py --kernels "${PHASE_KERNELS:-attention,gemv}" ${PHASES_ARGS:-} \
              --out "$OUT/phases.json" 2>&1 | tee "$OUT/phases.log" | grep '^[|#]' ;;
    # the batch-1 GEMVs' phases with the residual add in the o GEMV only (the default) and in o and down:
    # where Qwen3's down GEMV loses 1.7 us per layer with its add while Llama's gains (notes/kernels.md)
    residual) for roles in o o,down; do
                RUNTIME_RESIDUAL_ADD=$roles timeout 200 python3 scripts/kernel_phases.py --kernels gemv --batch 1 \
                  --model Qwen/Qwen3-1.7B --model meta-llama/Llama-3.2-1B-Instruct --out "$OUT/phases_residual_${roles/,/_}.json" \
                  2>&1 | tee "$OUT/phases_residual_${roles/,/_}.log" | grep '^[|#]'
              done ;;
    # the qkv GEMV's position-gated early release (RUNTIME_QKV_PDL=long, not timed with its position
    # read before the wait): its GPU test, then Qwen3 near positions 2000 and 300 against late and early
    qkvlong) timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py -k "qkv_release or l2_spill" 2>&1 \
               | tee "$OUT/tests_qkv_release.log" | tail -2
             for p in 1900 256; do
               timeout 200 python3 scripts/profile_step.py --ab --no-profile --repeat 2 --prompt $p --steps 100 --capacity 2048 \
                 --model Qwen/Qwen3-1.7B --settings "default,qkv GEMV releases early past the L2 position,qkv GEMV releases early" \
                 --out "$OUT/qkv_long_$p.json" 2>&1 | tee "$OUT/qkv_long_$p.log" | grep '^| Q'
             done ;;
    # the twenty-fourth session's next A/Bs (notes/kernels.md): the H100's shipped GEMV blocks against
    # this card's own picks, and the top-k select started below the shared digits; then their tests
    nextab) timeout 120 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_kernels_sampling.py -k "select or shared or sample" 2>&1 \
              | tee "$OUT/tests_topk_skip.log" | tail -2
            for m in meta-llama/Llama-3.2-1B-Instruct google/gemma-3-1b-it Qwen/Qwen3-1.7B; do
              timeout 150 python3 scripts/profile_step.py --ab --no-profile --repeat 3 --prompt 256 --steps 200 --capacity 2048 \
                --model "$m" --settings default --setting 'skip::RUNTIME_TOPK_SKIP=1' \
                --blocks-from runtime/kernels/tuned/nvidia-h100-80gb-hbm3.json \
                --out "$OUT/nextab_${m##*/}.json" 2>&1 | tee "$OUT/nextab_${m##*/}.log" | grep '^| [mgQ]'
            done ;;
    # the start-up step choice (runtime/engine/step_tuning.py) as a card without shipped choices sees it:
    # each model's picks alone, blocks in the step, and blocks with roles in the step under RUNTIME_GEMV_TUNE=fresh,
    # then all three (each file's blocks and role lists) against the shipped file
    steptune) for m in meta-llama/Llama-3.2-1B-Instruct Qwen/Qwen3-1.7B google/gemma-3-1b-it; do
                n=${m#*/}
                timeout 180 python3 scripts/step_tune_check.py --model "$m" --mode alone --mode blocks --mode step --out "$OUT/step_tune" \
                  2>&1 | tee -a "$OUT/step_tune.log" | grep -v '^  '
                timeout 250 python3 scripts/profile_step.py --ab --no-profile --repeat "${AB_REPEAT:-3}" --capacity 2048 --model "$m" \
                  --settings default --blocks-from "$OUT/step_tune/alone_$n.json" --blocks-from "$OUT/step_tune/blocks_$n.json" \
                  --blocks-from "$OUT/step_tune/step_$n.json" \
                  --out "$OUT/ab_steptune_$n.json" 2>&1 | grep '^| ' | grep -v -e '^| model' -e '^|---'
              done
              rm -rf "$OUT"/step_tune/cache_* ;;
    kbench) python3 scripts/bench_kernels.py --out "$OUT/bench_kernels.json" 2>&1 | tee "$OUT/bench_kernels.log" | tail -30 ;;
    chat) python3 scripts/chat_gpu_check.py "${CHAT_ARGS[@]}" 2>&1 | tee "$OUT/chat.log" | tail -8 ;;
    # the full suite, resumable: rerun the same stage (carrying results/$FULL_DIR) until it completes
    full) timeout -s INT "${FULL_S:-540}" python3 -m runtime.cli bench configs/full.yaml --out "results/$FULL_DIR" 2>&1 \
            | tee "$OUT/full.log" | tail -3
          mkdir -p "$OUT/$FULL_DIR" && cp "results/$FULL_DIR"/*.{json,jsonl,md,csv} "$OUT/$FULL_DIR/" 2>/dev/null ;;
    *) echo "unknown stage $stage" ;;
  esac
done
