#!/usr/bin/env bash
# The runs behind docs/results.md (after examples/polls_demo.sh): a GSM8K subset with a
# GSM8K expert. About 25 minutes on 2 CPU cores.
# Run from the repository root: bash examples/results_runs.sh
set -euo pipefail
px=${PROXYTOOL:-proxytool}
out=${OUT:-runs/demo}
threads=${THREADS:-2}
export HF_HUB_OFFLINE=1
base=qwen2.5-coder-1.5b-instruct

# GSM8K: a LoRA expert on the 0.5B (the recipe: 15 steps), then 12 test problems, zero-shot
[ -f "$out/gsm8k-expert/proxytool.json" ] || $px train --recipe qwen2.5-coder-0.5b/gsm8k-lora \
  --output "$out/gsm8k-expert" --name gsm8k-demo-expert --threads "$threads"
$px eval --task gsm8k --few-shot 0 --limit 12 --max-new-tokens 160 --batch-size 4 --base $base \
  --expert "$out/gsm8k-expert" --threads "$threads" --output "$out/eval-gsm8k"
