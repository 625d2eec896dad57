#!/usr/bin/env bash
# The GPU table in one short rental (about 5 minutes of GPU time): random weights of real shapes, a
# Qwen2.5-7B-shaped base (bf16) and a Qwen2.5-0.5B-shaped pair (a LoRA adapter, separate copy), at batch 1
# and 8: base alone, proxy eager, proxy with static KV caches + torch.compile (CUDA graphs), speculative
# proxy decoding k = 2 and 4 (eager and static), and an NF4 base. Writes one JSON per run and table.md.
#
# Run:        bash benchmarks/gpu_all.sh TOKENIZER_DIR OUT_DIR
# CPU check:  BASE=tiny SMALL=tiny DEVICE=cpu DTYPE=float32 NEW_TOKENS=4 REPEATS=1 bash benchmarks/gpu_all.sh TOK OUT
set -euo pipefail
tok=$1; out=$2
models=${MODELS:-$out/models}; py=${PYTHON:-python3}; device=${DEVICE:-cuda}
mkdir -p "$out"
[ -f "$models/lora/adapter_config.json" ] || $py benchmarks/make_random_models.py --tokenizer "$tok" --out "$models" \
  --base "${BASE:-7b}" --small "${SMALL:-0.5b}" --device "$device" --dtype "${DTYPE:-bfloat16}"
bench() {
  $py -m proxytool bench --base "$models/base" --expert "$models/lora" --device "$device" --no-share-weights \
    --new-tokens "${NEW_TOKENS:-64}" --repeats "${REPEATS:-3}" --batch-sizes 1,8 "$@"
}
bench --modes base,proxy,speculative --speculative 2 --output "$out/eager_k2.json"
bench --modes speculative --speculative 4 --output "$out/eager_k4.json"
bench --modes base,proxy,speculative --speculative 2 --kv-cache static --compile "${COMPILE:-on}" --output "$out/static_k2.json"
bench --modes speculative --speculative 4 --kv-cache static --compile "${COMPILE:-on}" --output "$out/static_k4.json"
if [ "$device" != cpu ]; then
  bench --modes base,proxy --quantize-base 4bit --output "$out/nf4.json"
fi
$py benchmarks/bench_table.py "$out"/*.json > "$out/table.md"
cat "$out/table.md"
