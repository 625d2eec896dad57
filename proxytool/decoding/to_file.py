"""`decode`: prompts file -> JSONL of completions, written incrementally and resumable.

Lines go to ``<output>.part`` in input order, each flushed and fsynced when its batch completes; the
finished file is renamed to ``<output>``. A re-run skips ids already complete in the part file (or in
a previous output) after cutting any torn last line, so an interrupted run (even kill -9) ends with
exactly the bytes an uninterrupted one writes.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxytool.data.prompts import PromptItem
from proxytool.decoding.generate import ProxyModels, completion_of, generate
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.trace import Tracer
from proxytool.errors import ProxyToolError


@dataclass(frozen=True)
class DecodeOptions:
    max_new_tokens: int = 128
    batch_size: int = 1
    sampling: SamplingConfig = SamplingConfig()
    stop: tuple[str, ...] = ()


def part_path(output: Path) -> Path:
    return output.with_name(output.name + ".part")


def completed_ids(output: Path) -> set[str]:
    """Prepare ``<output>.part`` for resuming and return the ids it already holds.

    Starts from the part file if there is one, else from a previous complete output; a torn last
    line (no newline) is cut off.
    """
    part = part_path(output)
    if not part.exists() and output.exists():
        part.write_bytes(output.read_bytes())
    if not part.exists():
        return set()
    data = part.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(part, "r+b") as f:
            f.truncate(len(keep))
    ids = set()
    for number, line in enumerate(keep.decode("utf-8").splitlines(), start=1):
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ProxyToolError(f"{part}:{number}: not a proxytool output line; delete it to start over") from None
    return ids


def check_writable(output: Path) -> None:
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise ProxyToolError(f"{output}: folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ProxyToolError(f"{output}: not writable")


def decode_prompts(
    models: ProxyModels,
    items: list[PromptItem],
    output: Path,
    options: DecodeOptions,
    on_tokens: Callable[[int], None] = lambda n: None,
    tracer: Tracer | None = None,
) -> int:
    """Decode every item not yet in the output, appending lines in input order. Returns the count done.

    Args:
        on_tokens: called with the number of tokens generated at each step (for progress bars).
        tracer: records every role's top candidates per generated token (``decode --trace``).
    """
    done = completed_ids(output)
    todo = [item for item in items if item.id not in done]
    part = part_path(output)
    with open(part, "a", encoding="utf-8") as sink:
        for start in range(0, len(todo), options.batch_size):
            batch = todo[start : start + options.batch_size]
            lines = _decode_batch(models, batch, options, on_tokens, tracer)
            sink.write("".join(lines))
            sink.flush()
            os.fsync(sink.fileno())
    os.replace(part, output)
    return len(todo)


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
