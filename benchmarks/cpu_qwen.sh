#!/usr/bin/env bash
# CPU benchmark on the offline Qwen pair: base Qwen2.5-Coder-1.5B-Instruct, expert = a LoRA adapter
# on Qwen2.5-Coder-0.5B-Instruct (r=16, all linear layers; timing does not depend on its values).
# Needs: proxytool models install qwen2.5-coder-1.5b-instruct qwen2.5-coder-0.5b-instruct
# Run:   bash benchmarks/cpu_qwen.sh [OUT_DIR]   (about 15 minutes on 2 cores)
# Smoke run (tests/docs/test_docs_scripts.py): the registry names point at tiny models and
# NEW_TOKENS=2 REPEATS=1 keep every case to a few tokens.
set -euo pipefail
out=${1:-runs/bench}
mkdir -p "$out"
px=${PROXYTOOL:-proxytool}
py=${PYTHON:-python}
repeats=${REPEATS:-2}
adapter="$out/random-lora-0.5b"
if [ ! -f "$adapter/adapter_config.json" ]; then
  $py benchmarks/make_random_models.py --lora-only \
    --small "$($py -c 'from proxytool.models.registry import resolve; print(resolve("qwen2.5-coder-0.5b-instruct").source)')" \
    --out "$adapter" --device cpu --dtype float32
fi
common=(--base qwen2.5-coder-1.5b-instruct --expert "$adapter" --threads 2 --prompt-tokens 42)
b1=(--batch-sizes 1 --new-tokens "${NEW_TOKENS:-32}" --repeats "$repeats")
# proxytool's defaults (shared LoRA pair, overlapped lanes) against base alone and the naive decoder
$px bench "${common[@]}" "${b1[@]}" --output "$out/cpu_b1.json"
# ablations at batch 1: each optimisation off in turn
$px bench "${common[@]}" "${b1[@]}" --modes proxy --no-share-weights --output "$out/cpu_b1_separate.json"
$px bench "${common[@]}" "${b1[@]}" --modes proxy --overlap off --output "$out/cpu_b1_sequential.json"
$px bench "${common[@]}" "${b1[@]}" --modes proxy --no-share-weights --overlap off \
  --output "$out/cpu_b1_separate_sequential.json"
# batch 8
$px bench "${common[@]}" --batch-sizes 8 --new-tokens "${NEW_TOKENS:-12}" --repeats 1 --output "$out/cpu_b8.json"
