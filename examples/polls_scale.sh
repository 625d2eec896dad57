#!/usr/bin/env bash
# The polls scale curve (issue 21 part 1): for each N in SIZES, an expert trained on N polls, scored as
# base vs expert vs proxy-tuned base on the trained / documents / unseen splits, with its training
# tokens, wall times and machine; then one table and one plot over every N.
#
# Per N, everything lives in its own folder OUT/n<N>/, so a point can be resumed, or run on another
# machine (SIZES=N there, then copy n<N>/ back beside the others for the table):
#   data/        proxytool data polls: N trained polls (4 QA phrasings per fact + 3 document renderings),
#                SIDE document-only polls and SIDE unseen polls (a seeded subset of the poll list)
#   expert/      proxytool train --recipe RECIPE on SMALL: the demo's memorisation recipe (raw
#                "Question: ...\nAnswer: ..." text, no chat template or system prompt, TRL sequence packing
#                into 256-token sequences without cross-example attention, LoRA r 32, 8 epochs)
#   eval/        proxytool eval --task polls: report.json (scores by split), outputs/<system>.jsonl
#   times.jsonl  one line per phase run: wall seconds, fresh or resumed, finished or not, cores, threads, GPU
# Resuming: a finished expert (proxytool.json) is reused; an interrupted one (Ctrl-C saves a checkpoint, and
# the recipe saves every 1000 steps) continues with `proxytool train --resume` from its last complete
# checkpoint; a finished eval (report.json) is reused. Delete a folder (or its expert/ or eval/) to redo it.
# Each N draws its own seeded subset of polls, so the polls of one N are not a subset of the next one's.
#
# Run from the repository root:  bash examples/polls_scale.sh [POLL_LIST_CSV]
# Table and plot: OUT/scale.md and OUT/scale.png (benchmarks/scale_table.py; also on a partial run).
# Environment: SIZES (trained polls per point, default "2 10 50 200"), SIDE (document-only polls and
#   unseen polls per point, default max(2, N/4)), SMALL (expert's model, default qwen2.5-coder-0.5b-instruct),
#   BASE (default qwen2.5-coder-1.5b-instruct), RECIPE (default qwen2.5-coder-0.5b/polls-facts-lora),
#   TRAIN_ARGS (more train flags, e.g. "--batch-size 8" on a GPU; not applied when resuming), ALPHA (proxy
#   alpha or comma list, default 1), BATCH (eval batch, default 18), EVAL_ARGS (more eval flags),
#   THREADS (default 2), OUT (default runs/scale), PYTHON (default python).
# Cost, estimated from the demo's measured 58 training tokens/s and 54 questions in 225 s on 2 idle cores
# (docs/results.md; not measured at these sizes): one epoch is about 3.6k / 16k / 79k / 305k tokens
# for N = 2 / 10 / 50 / 200, so 8 epochs take about 8 min / 37 min / 3 h / 12 h on 2 cores, and the eval
# (54 / 126 / 646 / 2,448 questions) 4 min to 3 h. Use a GPU for N >= 50.
set -euo pipefail
csv=${1:-../shared/data/polls/538_2024_forecast_poll_list.csv}
sizes=${SIZES:-2 10 50 200}
small=${SMALL:-qwen2.5-coder-0.5b-instruct}
base=${BASE:-qwen2.5-coder-1.5b-instruct}
recipe=${RECIPE:-qwen2.5-coder-0.5b/polls-facts-lora}
alpha=${ALPHA:-1}
batch=${BATCH:-18}
threads=${THREADS:-2}
out=${OUT:-runs/scale}
px=${PROXYTOOL:-proxytool}
py=${PYTHON:-python}
read -r -a train_args <<<"${TRAIN_ARGS:-}"
read -r -a eval_args <<<"${EVAL_ARGS:-}"
export HF_HUB_OFFLINE=1

step() { printf '\n== %s ==\n' "$*"; }
# The phase running now, so that an interrupted one is recorded too (its time was spent).
phase="" phase_dir="" phase_start=0 phase_attempt=fresh
record() { "$py" benchmarks/scale_table.py record "$phase_dir" "$phase" $((SECONDS - phase_start)) --threads "$threads" --attempt "$phase_attempt" "$@"; }
on_exit() { if [ -n "$phase" ]; then record --interrupted || true; fi; }
trap on_exit EXIT
begin() { phase=$1 phase_dir=$2 phase_attempt=$3 phase_start=$SECONDS; }
end() { record; phase=""; }

step "model packs"
for model in "$small" "$base"; do
  case $model in qwen2.5-coder-0.5b-instruct | qwen2.5-coder-1.5b-instruct) $px models install "$model" ;; esac
done

for n in $sizes; do
  side=${SIDE:-$((n / 4 > 2 ? n / 4 : 2))}
  total=$((n + 2 * side))
  fraction=$(awk -v s="$side" -v t="$total" 'BEGIN { printf "%.6f", s / t }')
  dir=$out/n$n
  expert=$dir/expert

  step "N=$n: data ($n trained, $side document-only, $side unseen polls)"
  if [ -f "$dir/data/train.jsonl" ]; then
    echo "reusing $dir/data"
  else
    $px data polls --csv "$csv" --out "$dir/data" --limit "$total" --seed 0 \
      --documents-fraction "$fraction" --unseen-fraction "$fraction"
  fi

  step "N=$n: LoRA expert on $small"
  if [ -f "$expert/proxytool.json" ]; then
    echo "reusing $expert (delete it to train again)"
  elif compgen -G "$expert/trainer/checkpoint-*/proxytool-checkpoint.json" >/dev/null; then
    begin train "$dir" resume
    $px train --resume --output "$expert" --threads "$threads"
    end
  else
    begin train "$dir" fresh
    $px train --recipe "$recipe" --model "$small" --data "$dir/data/train.jsonl" --output "$expert" \
      --name "polls-scale-n$n-expert" --threads "$threads" "${train_args[@]}"
    end
  fi

  step "N=$n: base vs expert vs proxy, three splits"
  if [ -f "$dir/eval/report.json" ]; then
    echo "reusing $dir/eval (delete it to evaluate again)"
  else
    # Every role reads the raw "Question: ...\nAnswer:" prompt the expert was trained on.
    begin eval "$dir" fresh
    $px eval --task polls --data-dir "$dir/data" --base "$base" --expert "$expert" \
      --base-format raw --expert-format raw --anti-expert-format raw \
      --alpha "$alpha" --batch-size "$batch" --threads "$threads" --output "$dir/eval" "${eval_args[@]}"
    end
  fi
done

step "table"
"$py" benchmarks/scale_table.py table "$out" --output "$out/scale.md" --plot "$out/scale.png"
echo "table in $out/scale.md, plot in $out/scale.png"
