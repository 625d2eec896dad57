"""Self-describing checkpoints: ``proxytool.json`` written at save time, read by the registry.

Schema (all keys optional except ``base``)::

    {
      "format": 1,
      "kind": "adapter" | "merged",          # adapter: PEFT adapter files; merged: full weights
      "base": {"name": str, "source": str, "revision": str | null, "content_hash": str | null,
               "prompt_format": "chat" | "raw"},   # the default anti-expert, with its own format
      "prompt_format": "chat" | "raw",        # how this model expects prompts
      "chat_template": str | null, "adapter_hash": str, "tokenizer_hash": str,
      "data": {"path", "sha256", "tokens", ...}, "eval_data": {...}, "recipe": {...},
      "config": {...}, "config_sources": {...}, "created": str, "versions": {...}, "metrics": {...},
      "processes": {"processes": int, "backend": str | null, "global_batch": int},   # training layout
      "merge": {"adapter", "adapter_hash", "dtype", "base_content_hash", "versions"}   # merged only
    }
"""

import hashlib
import json
from pathlib import Path

from proxytool.errors import ProxyToolError
from proxytool.files.atomic import write_text

METADATA_FILE = "proxytool.json"


def read_metadata(folder: Path) -> dict | None:
    """The checkpoint metadata of ``folder``, or None when it has none."""
    path = Path(folder) / METADATA_FILE
    meta = _json_file(path)
    if meta is None:
        return None
    if not isinstance(meta.get("base"), dict) or "source" not in meta["base"]:
        raise ProxyToolError(f"{path}: field 'base.source' is missing")
    return meta


def write_metadata(folder: Path, meta: dict) -> None:
    """Write ``proxytool.json`` atomically."""
    write_text(Path(folder) / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def hash_files(paths, chunk: int = 1 << 20) -> str:
    """SHA-256 over the given files' names and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def content_hash(folder: Path) -> str | None:
    """Hash of a local model folder's weights and config (None for a hub id)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in {".safetensors", ".bin", ".gguf"} or p.name == "config.json")
    ]
    return hash_files(files) if files else None


ALPHA_FILE = "alpha.json"
"""The α chosen on held-out data for an expert (``proxytool eval --alpha auto``), next to its weights::

    {"format": 1, "alpha": float, "beats_base": bool,
     "base": {"name", "source"}, "anti_expert": {"name", "source"},   # what it was chosen with
     "task": str, "dev_data": str, "n": int, "plausible": float,
     "scores": {"base": float, "proxy@<alpha>": float, ...}, "junk_rates": {...},
     "command": str, "created": str}
"""


def write_calibration(folder: Path, record: dict) -> Path:
    """Write ``alpha.json`` into an expert's folder atomically; returns its path."""
    path = Path(folder) / ALPHA_FILE
    write_text(path, json.dumps({"format": 1, **record}, indent=2, sort_keys=True) + "\n")
    return path


def _json_file(path: Path, hint: str = ""):
    """The JSON value in ``path``, None when there is no such file; invalid JSON is a one-line error
    naming the file and line (``hint`` says what to do about it)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ProxyToolError(f"{path}:{err.lineno}: invalid JSON ({err.msg}){hint}") from None


def read_calibration(expert_source: str, base_source: str) -> dict | None:
    """The calibration of an expert folder for this base (matched by source), or None: an α chosen with
    another base says nothing about this one."""
    path = Path(expert_source) / ALPHA_FILE
    record = _json_file(path, "; delete it or run eval --alpha auto")
    if record is None:
        return None
    alpha = record.get("alpha") if isinstance(record, dict) else None
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise ProxyToolError(f"{path}: field 'alpha' must be a number; delete it or run eval --alpha auto")
    base = record.get("base") or {}
    if base.get("source") != str(base_source):
        return None
    return {**record, "path": str(path)}
