#!/usr/bin/env bash
# GPU benchmark with random weights of real shapes: a Qwen2.5-7B-shaped base (bf16) and a
# Qwen2.5-0.5B-shaped pair (a LoRA adapter, r=16, all linear layers, on the 0.5B).
# Run: bash benchmarks/gpu_random.sh TOKENIZER_DIR OUT_DIR   (about 10 minutes on one H100)
set -euo pipefail
tok=$1; out=$2; models=${MODELS:-/tmp/proxytool-bench-models}
mkdir -p "$out"
py=${PYTHON:-python3}
[ -f "$models/lora/adapter_config.json" ] || $py benchmarks/make_random_models.py --tokenizer "$tok" --out "$models"
bench() { $py -m proxytool bench --base "$models/base" --expert "$models/lora" --new-tokens 64 --repeats 3 "$@"; }
bench --batch-sizes 1,8 --modes base,engine-base,reference --output "$out/gpu_baselines.json"
for share in share-weights no-share-weights; do
  for overlap in off on; do
    bench --batch-sizes 1,8 --modes proxy --$share --overlap $overlap --output "$out/gpu_proxy_${share}_overlap-${overlap}.json"
  done
done
bench --batch-sizes 1 --modes base,proxy --quantize-base 4bit --no-share-weights --output "$out/gpu_4bit.json"
# speculative proxy decoding: the cost of one round (k expert steps + one (k+1)-token verify). Random
# weights rarely agree (the bench prints drafts kept per round, a): ms per round = ms/step × (1 + a). Combine with the
# acceptance measured on real models (docs/performance.md, "Speculative proxy decoding").
for k in 2 4; do
  bench --batch-sizes 1,8 --modes proxy,speculative --speculative $k --no-share-weights \
    --output "$out/gpu_speculative_k$k.json"
done
