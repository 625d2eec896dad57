"""GGUF files converted once into cached Hugging Face folders (safetensors + tokenizer).

Loading a GGUF through transformers dequantizes every tensor on each load (a minute or more for a
1.5B model). Converting once to a plain safetensors folder makes later loads take a second or two:

    folder = converted_folder(Path("model.gguf"))      # slow the first time, instant afterwards
    AutoModelForCausalLM.from_pretrained(folder)

The folder lives under ``cache_dir()/gguf/<stem>-<key>`` where the key is the file's SHA-256 when the
caller knows it (packs do), else a hash of its resolved path, size and modification time. It is
built in a temp folder beside the target and renamed into place under a file lock, so two processes
never convert the same file twice and nobody ever sees half a folder.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

from proxytool.errors import ProxyToolError
from proxytool.files.atomic import write_text
from proxytool.files.paths import cache_dir
from proxytool.models.registry import DTYPES as MODEL_DTYPES

Progress = Callable[[str, str], None]
"""``progress(stage, message)``: called at each step; library code never prints."""

RECORD = "proxytool-gguf.json"
DTYPES = tuple(d for d in MODEL_DTYPES if d != "auto")  # a conversion writes one concrete dtype
# End-of-turn tokens of common chat formats. Generation must stop on these as well as on the file's
# own eos id: Qwen instruct files name <|im_end|> as eos, yet a raw prompt ends with <|endoftext|>.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|eom_id|>")
CONTROL = 3  # llama.cpp token type of special tokens


def _noop(stage: str, message: str) -> None:
    pass


def cache_key(gguf_path: Path, sha256: str | None = None) -> str:
    """Short key naming the converted folder: content hash if known, else path + size + mtime."""
    if sha256:
        return sha256.lower()[:16]
    stat = gguf_path.stat()
    ident = f"{gguf_path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def target_folder(gguf_path: Path, sha256: str | None = None, dtype: str = "float32") -> Path:
    """Where :func:`converted_folder` puts (or has put) the conversion of ``gguf_path``."""
    suffix = "" if dtype == "float32" else f"-{dtype}"
    return cache_dir() / "gguf" / f"{gguf_path.stem}-{cache_key(gguf_path, sha256)}{suffix}"


def is_converted(folder: Path) -> bool:
    return (folder / RECORD).is_file() and (folder / "config.json").is_file()


def converted_folder(
    gguf_path: Path,
    dtype: str = "float32",
    sha256: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> Path:
    """Convert ``gguf_path`` once into a cached HF folder and return the folder.

    Args:
        gguf_path: the ``.gguf`` file.
        dtype: weights dtype of the folder; float32 (the default) keeps the dequantized values exact.
        sha256: the file's SHA-256 if already verified; names the cache entry by content, so the
            folder is found again even after the file is deleted or rebuilt elsewhere.
        progress: ``progress(stage, message)`` callback for the slow steps.
        force: convert again even when a cached folder exists.

    Returns:
        A folder loadable with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.
    """
    progress = progress or _noop
    if dtype not in DTYPES:
        raise ProxyToolError(f"GGUF conversion dtype must be one of {', '.join(DTYPES)} (got '{dtype}')")
    gguf_path = Path(gguf_path).expanduser()
    target = target_folder(gguf_path, sha256, dtype) if gguf_path.is_file() or sha256 else None
    if target is not None and not force and is_converted(target):
        return target
    if not gguf_path.is_file():
        raise ProxyToolError(f"{gguf_path}: GGUF file not found")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not force and is_converted(target):  # another process finished it while we waited
            return target
        for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):  # left by a killed conversion
            for stale in target.parent.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        progress("convert", f"converting {gguf_path.name} into {target}")
        try:
            _convert(gguf_path, tmp, dtype, progress)
            write_text(tmp / RECORD, json.dumps(_record(gguf_path, sha256, dtype), indent=2) + "\n")
            _usual_permissions(tmp)
            progress("convert", f"moving into place: {target}")
            if target.exists():  # force, or a broken folder without a record
                trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, trash / "old")
                os.replace(tmp, target)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _usual_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; give the folder the permissions the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _record(gguf_path: Path, sha256: str | None, dtype: str) -> dict:
    from importlib.metadata import version

    stat = gguf_path.stat()
    return {
        "source": str(gguf_path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256,
        "dtype": dtype,
        "transformers": version("transformers"),
        "gguf": version("gguf"),
    }


def _convert(gguf_path: Path, out: Path, dtype: str, progress: Progress) -> None:
    """Dequantize ``gguf_path`` with transformers and save model, tokenizer and generation config."""
    with _quiet_transformers(progress):
        _convert_quietly(gguf_path, out, dtype, progress)


def _convert_quietly(gguf_path: Path, out: Path, dtype: str, progress: Progress) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    progress("convert", f"reading tokenizer from {name}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as err:
        raise _error(gguf_path, "tokenizer", err) from err
    progress("convert", f"dequantizing {name} to {dtype} (the slow step)")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    except Exception as err:
        raise _error(gguf_path, "model", err) from err
    # save_pretrained refuses a model still marked as GGUF-quantized; the weights are already dense.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    _set_generation_ids(model, tokenizer, gguf_path)
    progress("convert", "saving safetensors")
    model.save_pretrained(out, safe_serialization=True)
    del model
    progress("convert", "saving tokenizer")
    tokenizer.save_pretrained(out)
    _check_tokenizer(tokenizer, out, gguf_path)


def _set_generation_ids(model, tokenizer, gguf_path: Path) -> None:
    """eos = the file's eos plus the chat format's end-of-turn tokens; pad and bos as the file says."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    meta = {
        key: _field_int(reader, f"tokenizer.ggml.{key}")
        for key in ("eos_token_id", "eot_token_id", "eom_token_id", "bos_token_id", "padding_token_id")
    }
    types = reader.fields.get("tokenizer.ggml.token_type")
    token_types = [int(types.parts[i][0]) for i in types.data] if types is not None else []
    vocab = tokenizer.get_vocab()
    eos = [i for i in (meta["eos_token_id"], meta["eot_token_id"], meta["eom_token_id"]) if i is not None]
    for token in END_OF_TURN_TOKENS:
        token_id = vocab.get(token)
        is_control = token_id is not None and token_id < len(token_types) and token_types[token_id] == CONTROL
        if is_control and token_id not in eos:
            eos.append(token_id)
    generation = model.generation_config
    generation._from_model_config = False  # else generate() may rebuild it from config (one eos id)
    if eos:
        generation.eos_token_id = eos if len(eos) > 1 else eos[0]
    pad = meta["padding_token_id"] if meta["padding_token_id"] is not None else tokenizer.pad_token_id
    generation.pad_token_id = pad if pad is not None else (eos[0] if eos else None)
    if meta["bos_token_id"] is not None:
        generation.bos_token_id = meta["bos_token_id"]


def _field_int(reader, key: str) -> int | None:
    field = reader.fields.get(key)
    return int(field.parts[field.data[0]][0]) if field is not None else None


def _check_tokenizer(original, out: Path, gguf_path: Path) -> None:
    """The saved tokenizer must reload with the same vocabulary, specials and chat template."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(out)
    sample = "def add(a, b):\n    return a + b  # héllo, 世界 <|im_end|>"
    problems = []
    if reloaded.get_vocab() != original.get_vocab():
        problems.append("vocabulary")
    if reloaded(sample).input_ids != original(sample).input_ids:
        problems.append("encoding")
    if (reloaded.chat_template or None) != (original.chat_template or None):
        problems.append("chat template")
    if reloaded.eos_token != original.eos_token:
        problems.append("eos token")
    if problems:
        raise ProxyToolError(
            f"{gguf_path}: the converted tokenizer differs from the GGUF one "
            f"({', '.join(problems)}); please report this with `proxytool env`"
        )


@contextlib.contextmanager
def _quiet_transformers(progress: Progress) -> Iterator[None]:
    """Route transformers' GGUF tqdm bar to ``progress``; hide its loading and saving bars."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    def counting(items, desc=None, **_):
        items = list(items)
        step = max(1, len(items) // 20)
        for i, item in enumerate(items, 1):
            if i % step == 0 or i == len(items):
                progress("convert", f"dequantized {i}/{len(items)} tensors")
            yield item

    original = getattr(gguf_utils, "tqdm", None)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if original is not None:
        gguf_utils.tqdm = counting
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if bars:
            hf_logging.enable_progress_bar()


def _error(gguf_path: Path, what: str, err: Exception) -> ProxyToolError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ProxyToolError(f"{gguf_path}: cannot read the {what} from this GGUF file: {first}")
