"""Training checkpoints that survive crashes: a checkpoint counts only once it is complete.

transformers' Trainer writes ``trainer/checkpoint-N/`` file by file. proxytool wraps each save and,
after the last file is written, adds ``proxytool-checkpoint.json`` atomically (temp file + rename):
that marker is the commit point. ``--resume`` uses the newest *complete* checkpoint and moves
incomplete ones (a crash or kill -9 mid-save) out of the way; a second Ctrl-C during a save waits
for the save to finish. A run killed before its first save left only ``trainer/run.json``: it can
simply be started again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from proxytool.errors import ProxyToolError, at
from proxytool.files.atomic import write_text

TRAINER_DIR = "trainer"
RUN_FILE = "run.json"
LOG_FILE = "train_log.jsonl"
MARKER = "proxytool-checkpoint.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def _checkpoints(trainer_dir: Path) -> list[Path]:
    if not trainer_dir.is_dir():
        return []
    found = [p for p in trainer_dir.iterdir() if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / MARKER).is_file() and (checkpoint / "trainer_state.json").is_file()


def last_complete(trainer_dir: Path) -> Path | None:
    """The newest checkpoint whose save finished (None when there is none)."""
    complete = [p for p in _checkpoints(trainer_dir) if is_complete(p)]
    return complete[-1] if complete else None


def set_aside_incomplete(trainer_dir: Path) -> list[Path]:
    """Remove checkpoints whose save never finished (they are proxytool's own, inside the run folder)."""
    removed = []
    for checkpoint in _checkpoints(trainer_dir):
        if not is_complete(checkpoint):
            shutil.rmtree(checkpoint, ignore_errors=True)
            removed.append(checkpoint)
    return removed


def never_saved(output: Path) -> bool:
    """A run folder killed before its first checkpoint: only run.json (and a log), nothing to resume."""
    if not output.is_dir() or (output / "proxytool.json").exists():
        return False
    trainer_dir = output / TRAINER_DIR
    if not (trainer_dir / RUN_FILE).is_file() or last_complete(trainer_dir) is not None:
        return False
    allowed = {TRAINER_DIR, LOG_FILE}
    return all(p.name in allowed for p in output.iterdir())


def check_output(output: Path, resume: bool) -> None:
    """The output folder suits the run: something to resume, or empty (or a run that never saved)."""
    if output.exists() and not output.is_dir():
        raise ProxyToolError(f"{at(output)}: is a file; --output must be a folder")
    ancestor = output
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ProxyToolError(
            f"{at(output)}: cannot create the output folder here ({ancestor} is not a writable folder)"
        )
    trainer_dir = output / TRAINER_DIR
    if resume:
        if last_complete(trainer_dir) is None:
            raise ProxyToolError(
                f"{at(output)}: nothing to resume (no complete checkpoint in {trainer_dir}); "
                "start a new run without --resume"
            )
        return
    if output.exists() and any(output.iterdir()) and not never_saved(output):
        raise ProxyToolError(
            f"{at(output)}: already exists and is not empty; pass --resume to continue its run "
            "or choose another --output"
        )


def clear_output(output: Path, resume: bool) -> None:
    """Clear what a checked output folder holds from earlier attempts (by one process, after every
    process ran :func:`check_output`): incomplete checkpoints, or a run that never saved."""
    if resume:
        set_aside_incomplete(output / TRAINER_DIR)
    elif never_saved(output):
        shutil.rmtree(output / TRAINER_DIR)
        (output / LOG_FILE).unlink(missing_ok=True)


def read_run_file(output: Path) -> dict:
    path = output / TRAINER_DIR / RUN_FILE
    if not path.is_file():
        raise ProxyToolError(
            f"{at(output)}: nothing to resume (no {TRAINER_DIR}/{RUN_FILE}); start a new run without --resume"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProxyToolError(f"{at(path)}: unreadable ({err}); start a new run") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ProxyToolError(f"{at(path)}: not a proxytool run file; start a new run")
    return record


def check_same_run(output: Path, data_sha256: str) -> None:
    saved = read_run_file(output)
    if saved.get("data_sha256") != data_sha256:
        raise ProxyToolError(
            f"{saved['config'].get('data')}: the data changed since the run in {output} started; "
            "resuming would mix two data sets (start a new run instead)"
        )


def write_run_file(output: Path, config: dict, data_sha256: str) -> None:
    record = {"config": config, "data_sha256": data_sha256}
    write_text(output / TRAINER_DIR / RUN_FILE, json.dumps(record, indent=2) + "\n")


class SaveGuard:
    """Wraps ``trainer._save_checkpoint``: marks each finished save, defers Ctrl-C while saving.

    Across processes the marker is written once, by rank 0, after every process finished its part.

    Attributes:
        saving: True while a checkpoint is being written.
        interrupt_pending: A Ctrl-C arrived during a save; raise KeyboardInterrupt once it is done.
    """

    def __init__(self, trainer):
        self.saving = False
        self.interrupt_pending = False
        original = trainer._save_checkpoint

        def save(model, trial, *args, **kwargs):
            self.saving = True
            try:
                original(model, trial, *args, **kwargs)
                trainer.accelerator.wait_for_everyone()  # every process wrote its part (RNG state, shards)
                folder = Path(trainer._get_output_dir(trial=trial)) / f"checkpoint-{trainer.state.global_step}"
                if trainer.args.should_save and folder.is_dir():
                    write_text(folder / MARKER, json.dumps({"step": trainer.state.global_step}) + "\n")
            finally:
                self.saving = False
            if self.interrupt_pending:
                raise KeyboardInterrupt

        trainer._save_checkpoint = save
