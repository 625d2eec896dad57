"""The one home of value checks that run before any model loads: each bad value is one line naming
its flag (or field), exit code 2. Used by the loading options (config.py), the CLI and the server.

Pure Python (no torch import at module level) so a bad value costs milliseconds, not a model load.
"""

import math
import re
from collections.abc import Sequence

from proxytool.errors import ProxyToolError

MAX_THREADS = 4096
MAX_SEED = 2**63 - 1
MAX_ALPHA = 1000.0  # beyond this the logit arithmetic overflows to inf/NaN in fp16/bf16 (and means nothing)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def finite(flag: str, value: float | None, low: float | None = None, high: float | None = None, *, open_low=False):
    """``value`` must be a finite number in [low, high] (or (low, high] with ``open_low``)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ProxyToolError(f"{flag} must be a finite number (got {value})")
    if low is not None and (value < low or (open_low and value == low)):
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        raise ProxyToolError(f"{flag} must be {bound} (got {value:g})")
    if high is not None and value > high:
        raise ProxyToolError(f"{flag} must be <= {high:g} (got {value:g})")


def at_least(flag: str, value: int | None, low: int, high: int | None = None) -> None:
    if value is None:
        return
    if value < low:
        raise ProxyToolError(f"{flag} must be >= {low} (got {value})")
    if high is not None and value > high:
        raise ProxyToolError(f"{flag} must be <= {high} (got {value})")


def one_of(flag: str, value: str | None, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        raise ProxyToolError(f"{flag} must be one of {', '.join(allowed)} (got '{value}')")


def device(value: str, flag: str = "--device") -> None:
    """Syntax here; whether CUDA exists is checked by :func:`device_available` (it imports torch)."""
    if not DEVICE_PATTERN.match(value or ""):
        raise ProxyToolError(f"{flag} must be auto, cpu, mps, cuda or cuda:N (got '{value}')")


def device_available(value: str, flag: str = "--device") -> None:
    """Fail before loading weights when the named accelerator is not there."""
    device(value, flag)
    if value in ("auto", "cpu"):
        return
    import torch

    if value == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ProxyToolError(f"{flag} mps: no Apple GPU available here (use cpu or auto)")
        return
    if not torch.cuda.is_available():
        raise ProxyToolError(f"{flag} {value}: no CUDA device available here (use cpu or auto)")
    index = int(value.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ProxyToolError(f"{flag} {value}: only {torch.cuda.device_count()} CUDA device(s) here")


def alpha(flag: str, value: float) -> None:
    """A steering weight: finite, and within ±MAX_ALPHA."""
    finite(flag, value)
    if abs(value) > MAX_ALPHA:
        raise ProxyToolError(f"{flag} must be between -{MAX_ALPHA:g} and {MAX_ALPHA:g} (got {value:g})")


def names(flag: str, values: Sequence[str] | None) -> None:
    for value in values or ():
        if not value or not value.strip():
            raise ProxyToolError(f"{flag} must not be empty")


def text(flag: str, value: str | None) -> None:
    """A text flag must be valid Unicode (a non-UTF-8 byte on the command line arrives as a lone surrogate)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ProxyToolError(f"{flag}: not valid UTF-8 text (character {err.start + 1})") from None


def sampling(temperature: float, top_k: int, top_p: float, seed: int) -> None:
    finite("--temperature", temperature, 0)
    at_least("--top-k", top_k, 0)
    finite("--top-p", top_p, 0, 1, open_low=True)
    at_least("--seed", seed, 0, MAX_SEED)


def generation(max_new_tokens: int | None, batch_size: int | None, stop: Sequence[str] | None = None) -> None:
    at_least("--max-new-tokens", max_new_tokens, 0, 1_000_000)
    at_least("--batch-size", batch_size, 1, 100_000)
    for s in stop or ():
        text("--stop", s)
        if s == "":
            raise ProxyToolError("--stop must not be empty (an empty stop string would end every completion at once)")


def _text_config(spec):
    """A model's (text) config, read without weights; None when it cannot be read here."""
    from proxytool.models.loading import weights_folder

    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(weights_folder(spec), revision=spec.revision)
    except ProxyToolError:
        raise
    except Exception:  # the loader reports unloadable models with its own message
        return None
    return getattr(config, "get_text_config", lambda: config)()


NF4_BLOCK = 64  # bitsandbytes' CPU 4-bit kernels quantize input widths in blocks of 64


def quantization_fits(spec, quantize: str, device_name: str) -> None:
    """``--quantize-base 4bit`` on a CPU needs every linear layer's input width to be a multiple of 64
    (bitsandbytes' CPU kernels fail in the first forward otherwise, after the whole load)."""
    if quantize != "4bit" or spec.kind == "remote":
        return
    from proxytool.models.loading import pick_device

    if pick_device(device_name) != "cpu":
        return
    config = _text_config(spec)
    if config is None:
        return
    heads, head_dim = getattr(config, "num_attention_heads", None), getattr(config, "head_dim", None)
    widths = {
        "hidden_size": getattr(config, "hidden_size", None),
        "intermediate_size": getattr(config, "intermediate_size", None),
        "num_attention_heads × head_dim": heads * head_dim if heads and head_dim else None,
    }
    for name, width in widths.items():
        if isinstance(width, int) and width % NF4_BLOCK:
            raise ProxyToolError(
                f"--quantize-base 4bit on CPU needs layer widths that are multiples of {NF4_BLOCK} "
                f"(bitsandbytes' CPU kernels); the base {spec.name} has {name} {width}: "
                "use --quantize-base 8bit or none, or a CUDA device"
            )


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_length(spec) -> int | None:
    """The most tokens a model attends to, read from its config (None when the config does not say).

    Reads ``config.json`` (through transformers' AutoConfig, so hub caches work offline); no weights load.
    """
    config = _text_config(spec)
    if config is None:
        return None
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class PromptFit:
    """Checks that a prompt, as each model of the run will see it, fits that model's context.

    Args:
        roles: (label, ModelSpec, role) for each model; role is "base", "expert" or "anti-expert".
        formats: role -> "chat"/"raw" overrides (else the spec's own format).
    """

    def __init__(self, roles, formats: dict[str, str]):
        from proxytool.decoding.formats import PromptFormat
        from proxytool.models.loading import load_tokenizer

        self.checks, tokenizers, limits = [], {}, {}
        for label, spec, role in roles:
            limit = limits.setdefault(spec.key, context_length(spec))
            if limit is None:
                continue
            if spec.key not in tokenizers:
                tokenizers[spec.key] = load_tokenizer(spec)
            style = formats.get(role) or spec.prompt_format
            self.checks.append((label, limit, PromptFormat(tokenizers[spec.key], style)))

    def check(self, name: str, prompt, max_new_tokens: int) -> None:
        """Raise naming ``name`` (e.g. "p.jsonl: prompt 'q3'") and both lengths when the prompt does not fit."""
        size = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
        for label, limit, prompt_format in self.checks:
            if size > 64 * limit:  # far too long whatever the tokenizer: don't spend time tokenizing it
                raise ProxyToolError(f"{name} has {size} characters, far beyond the {limit}-token context of {label}")
            n = len(prompt_format.encode(prompt))
            if n + max_new_tokens > limit:
                raise ProxyToolError(
                    f"{name} is {n} tokens + --max-new-tokens {max_new_tokens}, more than the {limit}-token "
                    f"context of {label}; shorten it or lower --max-new-tokens"
                )


def prompt_lengths(roles, items, max_new_tokens: int, formats: dict[str, str], where: str) -> None:
    """Every prompt of ``items`` (objects with ``id`` and ``prompt``) must fit: see :class:`PromptFit`."""
    fit = PromptFit(roles, formats)
    for item in items:
        fit.check(f"{where}: prompt '{item.id}'", item.prompt, max_new_tokens)


def model_roles(resolved) -> list[tuple]:
    """(label, spec, role) for the base and each expert and anti-expert of a ``ResolvedSetup``."""
    roles = [("the base", resolved.base, "base")]
    for i, (_, expert, anti) in enumerate(resolved.pairs, start=1):
        roles += [
            (f"expert {i} ({expert.name})", expert, "expert"),
            (f"anti-expert {i} ({anti.name})", anti, "anti-expert"),
        ]
    return roles


def not_the_input(output, inputs, flag: str = "--output") -> None:
    """Refuse an output (or its .part/.meta.json companions) that is one of the input files."""
    import os
    from pathlib import Path

    output = Path(output)
    companions = [output, output.with_name(output.name + ".part"), output.with_name(output.name + ".meta.json")]
    for given in inputs:
        if given is None or str(given) == "-":
            continue
        source = Path(given)
        for path in companions:
            same = path.resolve() == source.resolve()
            if not same and path.exists() and source.exists():
                try:
                    same = os.path.samefile(path, source)
                except OSError:
                    same = False
            if same:
                raise ProxyToolError(f"{flag} {output} would overwrite the input {given}; choose another output")
