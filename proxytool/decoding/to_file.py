"""`decode`: prompts file -> JSONL of completions, written incrementally and resumable.

Lines go to ``<output>.part`` in input order, each flushed and fsynced when its batch completes; the
finished file is renamed to ``<output>``. Next to it proxytool keeps ``<output>.meta.json``: a
fingerprint of the run (prompts, models, settings) and, once finished, the output's sha256.

A re-run resumes only what proxytool itself wrote under the same fingerprint: it skips ids already
in the part file after cutting a torn last line, so an interrupted run (even kill -9) ends with
exactly the bytes an uninterrupted one writes. It refuses, without touching anything, an output or
part file with no meta file (not written by proxytool), one whose fingerprint differs (the error
says what), and a finished output that was edited since.
"""

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from proxytool.decoding.formats import PromptItem
from proxytool.decoding.generate import ProxyModels, completion_of, generate
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.trace import Tracer
from proxytool.errors import ProxyToolError, RunFailed
from proxytool.files.atomic import write_text

META_KIND = "proxytool decode output"


@dataclass(frozen=True)
class DecodeOptions:
    max_new_tokens: int = 128
    batch_size: int = 1
    sampling: SamplingConfig = SamplingConfig()
    stop: tuple[str, ...] = ()
    speculative: int | str = 0  # draft tokens per round (decoding/speculative.py); 0 = step by step; or "auto"
    draft: str = "expert"


def part_path(output: Path) -> Path:
    return output.with_name(output.name + ".part")


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def fingerprint(items: list[PromptItem], options: DecodeOptions, models: dict | None = None) -> dict:
    """What makes two decode runs write the same lines: prompts (hashed), models and settings."""
    prompts = json.dumps([[item.id, item.prompt] for item in items], ensure_ascii=False, sort_keys=True)
    settings = asdict(options)
    settings["stop"] = list(options.stop)
    if options.sampling.greedy or options.speculative == "auto":  # the same lines as step by step
        settings["speculative"], settings["draft"] = 0, "expert"
    return {
        "prompts_sha256": hashlib.sha256(prompts.encode("utf-8")).hexdigest(),
        "prompts": len(items),
        "models": models or {},
        "settings": settings,
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and a != b:
            diffs += _differences(dict(enumerate(a)), dict(enumerate(b)), f"{prefix}{key}.")
        elif a != b:
            if key == "prompts_sha256":
                diffs.append("the prompts")
            else:
                diffs.append(f"{prefix}{key} {json.dumps(a)} -> {json.dumps(b)}")
    return diffs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_meta(output: Path) -> dict | None:
    path = meta_path(output)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("kind") != META_KIND or not isinstance(meta.get("fingerprint"), dict):
        raise ProxyToolError(
            f"{path}: not a proxytool decode meta file; delete it (and {output.name}.part) to start over"
        )
    return meta


def plan_resume(output: Path, items: list[PromptItem], run: dict) -> str:
    """Decide what to do with existing files at ``output``, touching nothing. Returns the state.

    "new" (nothing there), "resume" (a part file of this run), or "done" (this run's finished output).

    Raises:
        ProxyToolError: A file proxytool did not write, or wrote for other prompts, models or settings.
    """
    output = Path(output)
    part, meta_file = part_path(output), meta_path(output)
    for path in (output, part):
        if path.exists() and not path.is_file():
            raise ProxyToolError(f"{path}: is a folder, not a file; choose another --output")
    meta = _read_meta(output)
    if meta is None:
        for path in (part, output):
            if path.exists():
                raise ProxyToolError(
                    f"{path}: exists and was not written by proxytool decode (no {meta_file.name}); "
                    "choose another --output or move it away"
                )
        return "new"
    if not part.exists() and not output.exists():
        return "new"  # a meta file left alone (its output was deleted): proxytool's own, replaced
    diffs = _differences(meta["fingerprint"], run)
    if diffs:
        what = part if part.exists() else output
        raise ProxyToolError(
            f"{what}: was written with other settings ({'; '.join(diffs[:3])}); rerun with the same ones, "
            f"or choose another --output"
        )
    if part.exists():
        return "resume"
    if meta.get("output_sha256") != _sha256(output):
        raise ProxyToolError(f"{output}: changed since proxytool wrote it; choose another --output or move it away")
    return "done"


def completed_ids(output: Path, items: list[PromptItem]) -> set[str]:
    """Prepare ``<output>.part`` for resuming and return the ids it already holds (a torn last line is cut)."""
    part = part_path(output)
    if not part.exists():
        return set()
    data = part.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    known = {item.id for item in items}
    ids = set()
    for number, line in enumerate(keep.split(b"\n")[:-1], start=1):
        try:
            line_id = str(json.loads(line)["id"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ProxyToolError(f"{part}:{number}: not a proxytool output line; delete it to start over") from None
        if line_id not in known:
            raise ProxyToolError(f"{part}:{number}: id '{line_id}' is not in the prompts; delete it to start over")
        ids.add(line_id)
    if len(keep) != len(data):
        with open(part, "r+b") as f:
            f.truncate(len(keep))
    return ids


def check_writable(output: Path) -> None:
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise ProxyToolError(f"{output}: folder '{folder}' does not exist")
    if output.is_dir():
        raise ProxyToolError(f"{output}: is a folder; --output must be a file")
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ProxyToolError(f"{output}: not writable")


def decode_prompts(
    models: ProxyModels,
    items: list[PromptItem],
    output: Path,
    options: DecodeOptions,
    on_tokens: Callable[[int], None] = lambda n: None,
    run: dict | None = None,
    tracer: Tracer | None = None,
) -> int:
    """Decode every item not yet in the output, appending lines in input order. Returns the count done.

    Args:
        on_tokens: called with the number of tokens generated at each step (for progress bars).
        run: the run's fingerprint (default: prompts and options only; the CLI adds the models).
        tracer: records every role's top candidates per generated token (``decode --trace``).
    """
    output = Path(output)
    run = run if run is not None else fingerprint(items, options)
    state = plan_resume(output, items, run)
    if state == "done":
        return 0
    if state == "new":
        write_text(meta_path(output), json.dumps({"kind": META_KIND, "fingerprint": run}, indent=1) + "\n")
    done = completed_ids(output, items)
    todo = [item for item in items if item.id not in done]
    part = part_path(output)
    fd = os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        for start in range(0, len(todo), options.batch_size):
            batch = todo[start : start + options.batch_size]
            lines = _decode_batch(models, batch, options, on_tokens, tracer)
            _append(fd, "".join(lines).encode("utf-8"), part)
    finally:
        os.close(fd)
    finished = {"kind": META_KIND, "fingerprint": run, "output_sha256": _sha256(part)}
    write_text(meta_path(output), json.dumps(finished, indent=1) + "\n")
    os.replace(part, output)
    return len(todo)


def _append(fd: int, data: bytes, part: Path) -> None:
    """Append whole lines; on a failed write (disk full) cut back to the last whole line, so it resumes."""
    start = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as err:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        raise RunFailed(
            f"{part}: cannot write ({err.strerror or err}); the lines written so far are kept: free space and rerun "
            "the same command to resume"
        ) from None


def _decode_batch(
    models: ProxyModels,
    batch: list[PromptItem],
    options: DecodeOptions,
    on_tokens: Callable[[int], None],
    tracer: Tracer | None = None,
) -> list[str]:
    rows, previous = [], 0
    for rows in generate(
        models,
        [item.prompt for item in batch],
        max_new_tokens=options.max_new_tokens,
        sampling=options.sampling,
        stop=options.stop,
        row_seeds=[item.index for item in batch],
        speculative=options.speculative,
        draft=options.draft,
        observe=tracer.observe if tracer is not None else None,
    ):
        total = sum(len(r.token_ids) for r in rows)
        on_tokens(total - previous)
        previous = total
    if tracer is not None:
        tracer.flush([item.id for item in batch], [len(row.token_ids) for row in rows])
    lines = []
    for item, row in zip(batch, rows):
        completion = completion_of(row, models.tokenizer)
        record = {
            "id": item.id,
            "prompt": item.prompt,
            "completion": completion.text,
            "token_ids": completion.token_ids,
            "finish_reason": completion.finish_reason,
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return lines
