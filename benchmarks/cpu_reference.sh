#!/usr/bin/env bash
# proxytool against the paper's reference decoding loop on CPU, shape by shape (issue 29):
# `proxytool bench --modes base,proxy,reference` for every combination of
#   pair kind  separate (expert and anti-expert two copies of the small model, nothing shared)
#              lora     (a random LoRA adapter on the small model: the pair shares its weights)
#   batch      $BATCHES       (default "1 8 32")
#   dtype      $DTYPES        (default "float32 bfloat16")
#   prompt     $PROMPTS       tokens (default "42 512")
#   threads    $THREAD_COUNTS (default "2 1")
# Each bench checks in the same run that proxytool's tokens equal the reference loop's; the table
# (OUT_DIR/table.md) has proxy/base and proxy/reference per shape.
# Needs: proxytool models install qwen2.5-coder-1.5b-instruct qwen2.5-coder-0.5b-instruct
# Run:   bash benchmarks/cpu_reference.sh [OUT_DIR]     (the full grid takes hours on 2 cores; narrow it
#        with the variables above, e.g. BATCHES="1 8" DTYPES=float32 PROMPTS=42 THREAD_COUNTS=2)
# Other variables: BASE, SMALL (registry names or folders), PAIRS ("separate lora"), NEW_TOKENS (32),
# REPEATS (2), ROUNDS (1: runs of every mode per shape, in alternating order, merged by mean time; 2 or
# more where the machine's speed drifts between runs), MODES (base,proxy,reference), EXTRA (more bench flags, e.g. "--overlap off").
# Smoke run (tests/docs/test_docs_scripts.py): the registry names point at tiny models.
set -euo pipefail
out=${1:-runs/cpu-reference}
mkdir -p "$out"
px=${PROXYTOOL:-proxytool}
py=${PYTHON:-python}
base=${BASE:-qwen2.5-coder-1.5b-instruct}
small=${SMALL:-qwen2.5-coder-0.5b-instruct}
read -r -a extra <<<"${EXTRA:-}"

small_dir=$($py -c "import sys; from proxytool.models.registry import resolve; print(resolve(sys.argv[1]).source)" "$small")
if [ -f "$small_dir" ] || [ ! -d "$small_dir" ]; then
  echo "cpu_reference.sh: SMALL must be a model folder (got $small_dir)" >&2
  exit 2
fi
copy="$out/small-copy"  # a second path: loaded as its own model, so the pair shares nothing
if [ ! -f "$copy/config.json" ]; then
  mkdir -p "$copy" && cp -rl "$small_dir"/. "$copy"/ 2>/dev/null || cp -r "$small_dir"/. "$copy"/
fi
adapter="$out/random-lora"
if [ ! -f "$adapter/adapter_config.json" ]; then
  $py benchmarks/make_random_models.py --lora-only --small "$small_dir" --out "$adapter" --device cpu --dtype float32
fi

batches=$(echo "${BATCHES:-1 8 32}" | tr ' ' ',')
for pair in ${PAIRS:-separate lora}; do
  if [ "$pair" = separate ]; then roles=(--expert "$small_dir" --anti-expert "$copy"); else roles=(--expert "$adapter"); fi
  for dtype in ${DTYPES:-float32 bfloat16}; do
    for prompt in ${PROMPTS:-42 512}; do
      for threads in ${THREAD_COUNTS:-2 1}; do
        name="${pair}_${dtype}_p${prompt}_t${threads}"
        echo "== $name" >&2
        $px bench --base "$base" "${roles[@]}" --dtype "$dtype" --threads "$threads" --prompt-tokens "$prompt" \
          --batch-sizes "$batches" --new-tokens "${NEW_TOKENS:-32}" --repeats "${REPEATS:-2}" --rounds "${ROUNDS:-1}" \
          --modes "${MODES:-base,proxy,reference}" "${extra[@]}" --output "$out/$name.json" >/dev/null
      done
    done
  done
done
$py benchmarks/bench_table.py "$out"/*_t*.json >"$out/table.md"
cat "$out/table.md"
