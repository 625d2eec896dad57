#!/usr/bin/env bash
# Issue 27's serving benchmark: C concurrent streaming greedy requests (each exactly MAX_TOKENS tokens)
# against (1) vLLM + proxytool's processor (`proxytool vllm`), steered (α = 1), (2) the same vLLM server
# with α = 0 (the base alone: the pair does not run for those requests), (3) `proxytool serve` over the
# same base and expert. Prints one markdown table per server (benchmarks/serve_load.py --url).
# Run:  VLLM_PYTHON=V/bin/python bash benchmarks/vllm_vs_serve.sh BASE EXPERT
# Vars: CONCURRENCY (16), MAX_TOKENS (32), VLLM_DTYPE (float32), VLLM_TP (1), THREADS (2, proxytool serve),
#       OUT (a folder for the JSON figures and the servers' logs; default a temporary one)
set -euo pipefail
base=${1:?usage: bash benchmarks/vllm_vs_serve.sh BASE EXPERT}
expert=${2:?usage: bash benchmarks/vllm_vs_serve.sh BASE EXPERT}
py=${PYTHON:-python}
out=${OUT:-$(mktemp -d -t vllm-vs-serve.XXXXXX)}
mkdir -p "$out"
load=(--concurrency "${CONCURRENCY:-16}" --requests 1 --max-tokens "${MAX_TOKENS:-32}")
free_port() { $py -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

server=""
stop() { if [ -n "$server" ]; then kill -- -"$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; server=""; }
trap stop EXIT
trap 'exit 130' INT TERM

start() {  # start LOG COMMAND...: a server in its own process group; waits until /v1/models answers
  local log=$1 port=$2
  shift 2
  setsid "$@" >"$log" 2>&1 &
  server=$!
  until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; do
    if ! kill -0 "$server" 2>/dev/null || grep -q "EngineCore failed to start" "$log"; then
      echo "vllm_vs_serve.sh: the server stopped while starting; $log ends:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 2
  done
}

port=$(free_port)
tp=${VLLM_TP:-1}
echo "== vLLM + proxytool's processor (tp $tp): $base steered by $expert" >&2
VLLM_CPU_KVCACHE_SPACE=${VLLM_KV_GB:-2} HF_HUB_OFFLINE=1 start "$out/vllm.log" "$port" \
  proxytool vllm --base "$base" --expert "$expert" --pair-dtype float32 --port "$port" --served-model-name base \
  --vllm-python "${VLLM_PYTHON:-.venv-vllm/bin/python}" -- --dtype "${VLLM_DTYPE:-float32}" --max-model-len 1024 \
  --tensor-parallel-size "$tp"
echo "### vLLM + processor, α = 1"
$py benchmarks/serve_load.py --url "http://127.0.0.1:$port" --model base "${load[@]}" --json "$out/vllm_alpha1.json" \
  --extra '{"vllm_xargs": {"proxytool_alpha": 1}}'
echo "### vLLM alone (the same server, α = 0)"
$py benchmarks/serve_load.py --url "http://127.0.0.1:$port" --model base "${load[@]}" --json "$out/vllm_alpha0.json" \
  --extra '{"vllm_xargs": {"proxytool_alpha": 0}}'
stop

port=$(free_port)
echo "== proxytool serve: $base steered by $expert" >&2
HF_HUB_OFFLINE=1 start "$out/serve.log" "$port" \
  proxytool serve --base "$base" --expert "$expert" --dtype float32 --threads "${THREADS:-2}" --port "$port" \
  --max-batch "${CONCURRENCY:-16}"
echo "### proxytool serve (continuous batching)"
$py benchmarks/serve_load.py --url "http://127.0.0.1:$port" "${load[@]}" --json "$out/serve.json"
stop
echo "figures and logs: $out" >&2
