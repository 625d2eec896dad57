#!/usr/bin/env bash
# The GPU table in one short rental: random weights of real shapes, a Qwen2.5-7B-shaped base (bf16) and a
# Qwen2.5-0.5B-shaped pair (a LoRA adapter, merged into its own copy), most important first: proxy with
# static KV caches + torch.compile (CUDA graphs) at batch 1, then eager at batch 1 and 8, then the static
# caches at batch 8, then speculative k = 4 and an NF4 base. Each step gets what is left of BUDGET_S
# seconds (default 540) and keeps what it measured when it is stopped; one JSON per step and table.md.
#
# Run:        bash benchmarks/gpu_all.sh TOKENIZER_DIR OUT_DIR
# CPU check:  BASE=tiny SMALL=tiny DEVICE=cpu DTYPE=float32 NEW_TOKENS=4 REPEATS=1 COMPILE=off bash benchmarks/gpu_all.sh TOK OUT
set -uo pipefail
tok=$1; out=$2
models=${MODELS:-$out/models}; py=${PYTHON:-python3}; device=${DEVICE:-cuda}
deadline=$((SECONDS + ${BUDGET_S:-540}))
mkdir -p "$out"
[ -f "$models/lora/adapter_config.json" ] || $py benchmarks/make_random_models.py --tokenizer "$tok" --out "$models" \
  --base "${BASE:-7b}" --small "${SMALL:-0.5b}" --device "$device" --dtype "${DTYPE:-bfloat16}" || exit 1
step() {  # NAME BENCH_ARGS...: one bench run, stopped (with its whole process group) at the deadline
  local name=$1 left=$((deadline - SECONDS)); shift
  if [ "$left" -le 10 ]; then echo "== $name: skipped (no time left)"; return; fi
  echo "== $name ($left s left)"
  timeout "$left" $py -m proxytool bench --base "$models/base" --expert "$models/lora" --device "$device" \
    --no-share-weights --new-tokens "${NEW_TOKENS:-64}" --repeats "${REPEATS:-3}" --output "$out/$name.json" "$@" \
    || echo "== $name: failed or stopped (exit $?)"
}
static=(--kv-cache static --compile "${COMPILE:-on}")
step static_b1 --batch-sizes 1 --modes base,proxy,speculative --speculative 2 "${static[@]}"
step eager --batch-sizes 1,8 --modes base,proxy,speculative --speculative 2
step static_b8 --batch-sizes 8 --modes base,proxy,speculative --speculative 2 "${static[@]}"
step k4 --batch-sizes 1 --modes speculative --speculative 4
step static_k4 --batch-sizes 1 --modes speculative --speculative 4 "${static[@]}"
if [ "$device" != cpu ] && $py -c "import bitsandbytes" 2>/dev/null; then
  step nf4 --batch-sizes 1 --modes base,proxy --quantize-base 4bit
fi
ls "$out"/*.json >/dev/null 2>&1 && $py benchmarks/bench_table.py "$out"/*.json > "$out/table.md" && cat "$out/table.md"
