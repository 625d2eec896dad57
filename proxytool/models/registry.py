"""One model registry for every command: a name becomes a ModelSpec.

Resolution order: a local path (checkpoint with proxytool.json, PEFT adapter, HF folder, GGUF file)
-> a user entry in ``$PROXYTOOL_HOME/models.toml`` -> a built-in alias -> a hub id ``owner/name``.
"""

import difflib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tomli_w
from filelock import FileLock

from proxytool.errors import ProxyToolError
from proxytool.files.atomic import write_text
from proxytool.files.paths import home
from proxytool.models.builtins import BUILTIN_MODELS
from proxytool.models.checkpoint import read_metadata

PROMPT_FORMATS = ("chat", "raw")
DTYPES = ("auto", "float32", "float16", "bfloat16")  # the one list of dtype names (gguf, merge, loading use it)
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
QUANTIZATIONS = ("none", "4bit", "8bit")
MAX_REGISTRY_BYTES = 16 * 2**20
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # http://…, also ftp://… (refused in one line)
ENTRY_KEYS = {"source", "base", "revision", "dtype", "quantization", "prompt_format", "description"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load one model.

    Attributes:
        name: what the user asked for (a registry name, a path or a hub id).
        source: hub id, local folder, adapter folder or GGUF file.
        kind: "hf" (weights to load as they are), "adapter" (PEFT adapter on ``base``), "gguf", or
            "remote" (an OpenAI-compatible server's URL; only as a base).
        base: the model this one was trained from: an adapter's base, or a merged checkpoint's origin.
            It is the default anti-expert when this model is used as an expert.
        prompt_format: "chat" (apply the tokenizer's chat template) or "raw".
    """

    name: str
    source: str
    kind: str = "hf"
    base: "ModelSpec | None" = None
    revision: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    prompt_format: str = "raw"
    description: str = field(default="", compare=False)

    @property
    def key(self) -> tuple:
        """Identity of the weights: two specs with the same key load the same model."""
        return (self.kind, self.source, self.revision, self.base.key if self.base else None)


def registry_file() -> Path:
    return home() / "models.toml"


def user_entries() -> dict[str, dict]:
    """The user's registry entries (empty when the file does not exist)."""
    path = registry_file()
    if not path.exists():
        return {}
    if not path.is_file():
        raise ProxyToolError(f"{path}: is not a file (the model registry); move it away")
    try:
        raw = path.read_bytes()[: MAX_REGISTRY_BYTES + 1]
    except OSError as err:
        raise ProxyToolError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(raw) > MAX_REGISTRY_BYTES:
        raise ProxyToolError(f"{path}: larger than {MAX_REGISTRY_BYTES // 2**20} MiB; not a model registry")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ProxyToolError(f"{path}:{line}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise ProxyToolError(f"{path}: invalid TOML ({err})") from None
    except RecursionError:
        raise ProxyToolError(f"{path}: nested too deeply") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ProxyToolError(f"{path}: key 'models' must be a table of entries ([models.NAME])")
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ProxyToolError(f"{path}: key 'models.{name}' must be a table (source = ..., ...)")
    return models


def _check_entry(name: str, entry: dict, where: str) -> None:
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise ProxyToolError(
            f"{where}: model '{name}' has unknown key '{sorted(unknown)[0]}' (known: {', '.join(sorted(ENTRY_KEYS))})"
        )
    if "source" not in entry:
        raise ProxyToolError(f"{where}: model '{name}' has no 'source'")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise ProxyToolError(
                f"{where}: model '{name}' field '{key}' must be a string (got {type(value).__name__} {value!r})"
            )
    if not entry["source"].strip():
        raise ProxyToolError(f"{where}: model '{name}' field 'source' is empty")
    for key, allowed in (("prompt_format", PROMPT_FORMATS), ("dtype", DTYPES), ("quantization", QUANTIZATIONS)):
        if key in entry and entry[key] not in allowed:
            raise ProxyToolError(f"{where}: model '{name}' field '{key}' must be one of {', '.join(allowed)}")


def check_name(name: str) -> None:
    """A registry name: non-empty, no spaces or slashes (``owner/name`` is how hub ids are written)."""
    if not name or not name.strip():
        raise ProxyToolError("models add: the name is empty")
    if name != name.strip() or any(c.isspace() for c in name):
        raise ProxyToolError(f"models add: name '{name}' contains whitespace")
    if "/" in name or "\\" in name:
        raise ProxyToolError(
            f"models add: name '{name}' contains a slash and would shadow a hub id or path (owner/name); "
            "pick a name without '/'"
        )
    if name.startswith((".", "~", "-")):
        raise ProxyToolError(f"models add: name '{name}' must not start with '.', '~' or '-'")


def add_entry(name: str, source: str, **hints) -> dict | None:
    """Add or replace a user entry; atomic and safe against concurrent writers.

    The entry is checked (keys, values, and that it resolves) before anything is written.

    Returns:
        The entry it replaced, or None.
    """
    check_name(name)
    entry = {"source": str(source), **{k: v for k, v in hints.items() if v is not None}}
    _check_entry(name, entry, "models add")
    source_path = Path(entry["source"]).expanduser()
    if not source_path.exists() and not _looks_like_hub_id(entry["source"]):
        raise ProxyToolError(f"models add: source '{source}' is not an existing path nor a hub id (owner/name)")
    _from_entry(name, entry)  # the source and base resolve (a model folder, adapter or GGUF; a known base)
    path = registry_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        entries = user_entries()
        previous = entries.get(name)
        entries[name] = entry
        write_text(path, tomli_w.dumps({"models": entries}))
    return previous


def remove_entry(name: str) -> None:
    """Remove a user entry (built-in aliases cannot be removed)."""
    path = registry_file()
    if not path.exists():
        raise ProxyToolError(f"no user model named '{name}' ({path} does not exist)")
    if name not in user_entries():  # checked before taking the lock, which leaves a .lock file behind
        hint = " (a built-in alias cannot be removed)" if name in BUILTIN_MODELS else ""
        raise ProxyToolError(f"no user model named '{name}' in {path}{hint}")
    with FileLock(str(path) + ".lock"):
        entries = user_entries()
        if name not in entries:
            hint = " (a built-in alias cannot be removed)" if name in BUILTIN_MODELS else ""
            raise ProxyToolError(f"no user model named '{name}' in {path}{hint}")
        del entries[name]
        write_text(path, tomli_w.dumps({"models": entries}))


def all_entries() -> dict[str, dict]:
    """Built-in and user entries; user entries win. Each carries ``origin``."""
    merged = {name: {**e, "origin": "built-in"} for name, e in BUILTIN_MODELS.items()}
    users = user_entries()
    for name, entry in users.items():
        _check_entry(name, entry, str(registry_file()))
    merged.update({name: {**e, "origin": "user"} for name, e in users.items()})
    return merged


def resolve(name: str) -> ModelSpec:
    """Turn a name, path or hub id into a ModelSpec, or raise a ProxyToolError that suggests names."""
    name = str(name)
    if not name.strip():
        raise ProxyToolError("empty model name")
    if URL_SCHEME.match(name):  # an OpenAI-compatible server (decoding/remote.py); a bad URL is a usage error
        from proxytool.models.remote_client import check_url

        return ModelSpec(name=name, source=check_url(name), kind="remote")
    if name in _resolving:
        raise ProxyToolError(f"{registry_file()}: model '{name}' is its own base (a 'base' cycle)")
    _resolving.append(name)
    try:
        return _resolve(name)
    finally:
        _resolving.remove(name)


_resolving: list[str] = []  # names being resolved, to catch base cycles


def _resolve(name: str) -> ModelSpec:
    path = Path(name).expanduser()
    if path.exists():
        return _from_path(name, path)
    users = user_entries()
    if name in users:
        _check_entry(name, users[name], str(registry_file()))
        return _from_entry(name, users[name])
    if name in BUILTIN_MODELS:
        return _from_entry(name, BUILTIN_MODELS[name])
    if _looks_like_hub_id(name):
        return ModelSpec(name=name, source=name)
    raise ProxyToolError(_unknown_message(name))


def _from_entry(name: str, entry: dict) -> ModelSpec:
    source = entry["source"]
    hints = {k: entry[k] for k in ("revision", "dtype", "quantization", "prompt_format", "description") if k in entry}
    path = Path(source).expanduser()
    spec = _from_path(name, path) if path.exists() else ModelSpec(name=name, source=source)
    if "base" in entry:
        hints["base"] = resolve(entry["base"])
    return replace(spec, **hints)


def _from_path(name: str, path: Path) -> ModelSpec:
    path = path.resolve()
    if not path.is_file() and not path.is_dir():
        raise ProxyToolError(f"{path}: not a model folder or a .gguf file")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ProxyToolError(f"{path}: not a model folder or a .gguf file")
        return ModelSpec(name=name, source=str(path), kind="gguf")
    meta = read_metadata(path)
    is_adapter = (path / "adapter_config.json").is_file()
    if not is_adapter and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSpec(name=name, source=str(ggufs[0]), kind="gguf")
        raise ProxyToolError(f"{path}: no config.json, adapter_config.json or single .gguf file in this folder")
    base = None
    if meta is not None:
        base = _resolve_base(meta["base"]["source"], path)
        recorded = meta["base"]
        base = replace(
            base,
            revision=recorded.get("revision") or base.revision,
            prompt_format=recorded.get("prompt_format") or base.prompt_format,
        )
    elif is_adapter:
        adapter_config = json.loads((path / "adapter_config.json").read_text())
        base_source = adapter_config.get("base_model_name_or_path")
        if not base_source:
            raise ProxyToolError(f"{path / 'adapter_config.json'}: field 'base_model_name_or_path' is empty")
        base = _resolve_base(base_source, path)
    prompt_format = (meta or {}).get("prompt_format") or (base.prompt_format if base else "raw")
    return ModelSpec(
        name=name, source=str(path), kind="adapter" if is_adapter else "hf", base=base, prompt_format=prompt_format
    )


def _resolve_base(source: str, checkpoint: Path) -> ModelSpec:
    """Resolve a recorded base; relative paths are relative to the checkpoint folder."""
    candidate = Path(source).expanduser()
    if not candidate.is_absolute() and (checkpoint / candidate).exists():
        source = str((checkpoint / candidate).resolve())
    try:
        return resolve(source)
    except ProxyToolError as err:
        raise ProxyToolError(f"{checkpoint}: its recorded base '{source}' cannot be found ({err})") from None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), list(all_entries()), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `proxytool models list`"
    return f"unknown model '{name}': not a path, registry name or hub id (owner/name){hint}"


def describe(spec: ModelSpec) -> dict:
    """A JSON-friendly view of a spec (for `models show`)."""
    return asdict(spec)
