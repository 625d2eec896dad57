#!/usr/bin/env bash
# The GSM8K base-alone rerun behind docs/results.md: does Qwen2.5-Coder-1.5B-Instruct score 0% on GSM8K
# because it cannot, or because 160 new tokens cut it off? The first N test problems (default 50),
# zero-shot, chat template, as `proxytool eval --task gsm8k --few-shot 0` asks them, with a 512-token
# budget; scored by the final number as eval scores it. Base alone: `proxytool eval` needs an expert.
# Run from the repository root: bash examples/gsm8k_base_budget.sh [N]
set -euo pipefail
n=${1:-50}
px=${PROXYTOOL:-proxytool}
work=work/gsm8k-budget
export HF_HUB_OFFLINE=1
mkdir -p "$work"
"${PYTHON:-python}" - "$n" "$work/prompts.jsonl" <<'PY'
import json, sys
from proxytool.evaluation.tasks import load_task
task = load_task("gsm8k", few_shot=0)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for ex in task.examples[: int(sys.argv[1])]:
        f.write(json.dumps({"id": ex.id, "prompt": ex.prompt, "answer": ex.answer}) + "\n")
PY
$px decode --base qwen2.5-coder-1.5b-instruct --prompts "$work/prompts.jsonl" --output "$work/base-512.jsonl" \
  --max-new-tokens 512 --batch-size 10 --stop $'\n\nQuestion:' --stop $'\n\n\n' --threads "${THREADS:-2}"
"${PYTHON:-python}" - "$work/prompts.jsonl" "$work/base-512.jsonl" <<'PY'
import json, sys
from proxytool.evaluation.metrics import gsm8k_score
answers = {r["id"]: r["answer"] for r in map(json.loads, open(sys.argv[1], encoding="utf-8"))}
rows = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
scores = [gsm8k_score(r["completion"], answers[r["id"]]) for r in rows]
cut = sum(r.get("finish_reason") == "length" for r in rows)
print(json.dumps({"n": len(rows), "accuracy": sum(scores) / len(rows), "hit_the_budget": cut}))
PY
