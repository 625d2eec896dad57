#!/usr/bin/env bash
# GPU benchmark with random weights of real shapes: a Qwen2.5-7B-shaped base (bf16) and a
# Qwen2.5-0.5B-shaped pair (a LoRA adapter, r=16, all linear layers, on the 0.5B).
# Run:        bash benchmarks/gpu_random.sh TOKENIZER_DIR OUT_DIR   (about 10 minutes on one H100)
# CPU check:  BASE=tiny SMALL=tiny DEVICE=cpu DTYPE=float32 NEW_TOKENS=4 REPEATS=1 bash benchmarks/gpu_random.sh TOK OUT
#             (no NF4 run on a CPU: bitsandbytes' 4-bit kernels need CUDA)
# Environment: MODELS (where the random models are written and reused, default OUT_DIR/models), BASE and
#              SMALL (shapes, default 7b and 0.5b), DEVICE (default cuda), DTYPE (default bfloat16),
#              NEW_TOKENS (default 64), REPEATS (default 3), PYTHON (default python3).
set -euo pipefail
tok=$1; out=$2
models=${MODELS:-$out/models}; py=${PYTHON:-python3}; device=${DEVICE:-cuda}
mkdir -p "$out"
[ -f "$models/lora/adapter_config.json" ] || $py benchmarks/make_random_models.py --tokenizer "$tok" --out "$models" \
  --base "${BASE:-7b}" --small "${SMALL:-0.5b}" --device "$device" --dtype "${DTYPE:-bfloat16}"
bench() {
  $py -m proxytool bench --base "$models/base" --expert "$models/lora" --device "$device" \
    --new-tokens "${NEW_TOKENS:-64}" --repeats "${REPEATS:-3}" "$@"
}
bench --batch-sizes 1,8 --modes base,engine-base,reference --output "$out/gpu_baselines.json"
for share in share-weights no-share-weights; do
  for overlap in off on; do
    bench --batch-sizes 1,8 --modes proxy --$share --overlap $overlap --output "$out/gpu_proxy_${share}_overlap-${overlap}.json"
  done
done
if [ "$device" != cpu ]; then
  bench --batch-sizes 1 --modes base,proxy --quantize-base 4bit --no-share-weights --output "$out/gpu_4bit.json"
fi
# speculative proxy decoding: the cost of one round (k expert steps + one (k+1)-token verify). Random
# weights rarely agree (the bench prints drafts kept per round, a): ms per round = ms/step × (1 + a). Combine with the
# acceptance measured on real models (docs/performance.md, "Speculative proxy decoding").
for k in 2 4; do
  bench --batch-sizes 1,8 --modes proxy,speculative --speculative $k --no-share-weights \
    --output "$out/gpu_speculative_k$k.json"
done
