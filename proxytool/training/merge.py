"""Merge a LoRA adapter into its base: a plain model folder that still records its origin.

The base is always loaded un-quantized (merging into 4-bit weights would round the update away).
The output is built in a temp folder beside the target and renamed into place; re-running with the
same adapter, base and dtype finds the recorded hashes equal and does nothing.
"""

from __future__ import annotations

import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from proxytool.errors import ProxyToolError, at
from proxytool.models.checkpoint import hash_files, read_metadata, write_metadata
from proxytool.models.registry import DTYPES


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge` did.

    Attributes:
        output: The merged model folder.
        skipped: True when the folder already held this exact merge.
        dtype: The dtype the weights were saved in.
    """

    output: Path
    skipped: bool
    dtype: str


def merge(checkpoint: str | Path, output: str | Path | None = None, dtype: str = "auto") -> MergeResult:
    """Merge the adapter ``checkpoint`` into its base and save full weights (safetensors).

    Args:
        checkpoint: An adapter folder (or a registry name for one).
        output: Target folder (default: ``<checkpoint>-merged`` beside it).
        dtype: "auto" (the dtype the base was saved in, else float32), float32, float16 or bfloat16.

    Returns:
        Where the merge is and whether it was skipped as already done.

    Raises:
        ProxyToolError: Not an adapter, bad dtype, or an output folder that is not a proxytool merge.
    """
    from proxytool.models.registry import resolve

    spec = resolve(str(checkpoint))
    if spec.kind != "adapter":
        raise ProxyToolError(f"{at(spec.source)}: not a LoRA adapter folder (no adapter_config.json); nothing to merge")
    if dtype not in DTYPES:
        raise ProxyToolError(f"--dtype must be one of {', '.join(DTYPES)} (got '{dtype}')")
    adapter = Path(spec.source)
    output = Path(output) if output is not None else adapter.with_name(adapter.name + "-merged")
    dtype = _resolve_dtype(spec, dtype)
    record = {
        "adapter": str(adapter),
        "adapter_hash": adapter_hash(adapter),
        "dtype": dtype,
        "base_content_hash": _base_hash(spec),
    }
    if _already_merged(output, record):
        return MergeResult(output=output, skipped=True, dtype=dtype)
    _check_replaceable(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        _write_merged(spec, tmp, dtype)
        write_metadata(tmp, _metadata(spec, adapter, record))
        _replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(output=output, skipped=False, dtype=dtype)


def adapter_hash(folder: Path) -> str:
    """Hash of an adapter's weights and config (what a merge depends on)."""
    files = [
        p
        for p in Path(folder).iterdir()
        if p.name == "adapter_config.json"
        or (p.name.startswith("adapter_model") and p.suffix in (".safetensors", ".bin"))
    ]
    return hash_files(files)


def _base_hash(spec) -> str | None:
    """The base's current content hash (None for a hub id): a changed base means a new merge."""
    from proxytool.training.train import base_record

    return base_record(spec.base)["content_hash"]


def _resolve_dtype(spec, dtype: str) -> str:
    """ "auto" keeps the dtype the base was saved in (a 7B base stays 16-bit), else float32."""
    if dtype != "auto":
        return dtype
    from transformers import AutoConfig

    from proxytool.models.loading import weights_folder

    try:
        config = AutoConfig.from_pretrained(weights_folder(spec.base), revision=spec.base.revision)
    except Exception:  # unreadable config: fall back to full precision
        return "float32"
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(saved).replace("torch.", "") if saved is not None else "float32"
    return name if name in DTYPES else "float32"


def _already_merged(output: Path, record: dict) -> bool:
    if not output.is_dir():
        return False
    meta = read_metadata(output)
    if meta is None or meta.get("kind") != "merged":
        return False
    done = meta.get("merge") or {}
    same = all(done.get(key) == record[key] for key in ("adapter_hash", "dtype", "base_content_hash"))
    return same and any(output.glob("*.safetensors"))


def _check_replaceable(output: Path) -> None:
    """Only an earlier proxytool merge (or an empty folder) may be replaced."""
    if not output.exists():
        return
    if output.is_dir() and not any(output.iterdir()):
        return
    meta = read_metadata(output) if output.is_dir() else None
    if meta is None or meta.get("kind") != "merged":
        raise ProxyToolError(f"{at(output)}: exists and is not a merged proxytool checkpoint; choose another --output")


def _write_merged(spec, folder: Path, dtype: str) -> None:
    from transformers import AutoTokenizer

    from proxytool.models.loading import load_model, tokenizer_folder

    model = load_model(spec, dtype=dtype, device="cpu")  # un-quantized, whatever the adapter trained on
    with warnings.catch_warnings():  # PEFT reads transformers 5's deprecated gradient-checkpointing name
        warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
        merged = model.merge_and_unload()
    merged.save_pretrained(folder)  # safetensors
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(spec))
    tokenizer.save_pretrained(folder)


def _metadata(spec, adapter: Path, record: dict) -> dict:
    from proxytool.training.train import base_record, package_versions

    meta = read_metadata(adapter) or {"format": 1, "base": base_record(spec.base), "prompt_format": spec.prompt_format}
    return {**meta, "kind": "merged", "merge": {**record, "versions": package_versions()}}


def _replace(tmp: Path, output: Path) -> None:
    """Swap ``tmp`` into ``output``; an old folder is moved aside first and removed after."""
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{tmp.name}")
        output.rename(old)
    tmp.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
