"""Proxy-tuning inside vLLM: a V1 logits processor that steers a vLLM-served base exactly.

vLLM computes the base's full-vocabulary logits for every request in its batch; this processor runs
the expert pair(s) on the same token ids and replaces each steered row by proxytool's one formula
(:func:`proxytool.decoding.combine.proxy_scores`, base = vLLM's row), so vLLM's own sampler
(temperature, top-p/k, seeds, stop strings, logprobs, n) samples the steered scores.

Configured by environment variables (read in every process vLLM starts; docs/vllm.md):
``PROXYTOOL_VLLM_EXPERTS`` (comma-separated names or paths; unset = the processor does nothing),
``PROXYTOOL_VLLM_ANTI_EXPERTS`` (one per expert, empty = the expert's recorded base),
``PROXYTOOL_VLLM_ALPHAS`` (one, or one per expert; default 1), ``PROXYTOOL_VLLM_DTYPE`` (default
auto) and ``PROXYTOOL_VLLM_DEVICE`` (default: the device vLLM gives the processor). A request sets
its own weights with ``SamplingParams(extra_args={"proxytool_alpha": α or [α, …]})`` (``vllm_xargs``
on the OpenAI routes); α = 0 for every pair leaves that request to the base alone.

The bookkeeping follows vLLM's ``BatchUpdate`` (removed, then added, then moved): each batch slot
holds its request's prompt ids, a live reference to its output ids and its α; the pair's KV state for
all of them is one batch (engines/pair_batch.py: one pair forward per step for every steered row). A
request added again after preemption is prefilled again (recompute). Importable without vLLM: the class
subclasses vLLM's ``LogitsProcessor`` only where vLLM is installed (tests drive it with a fake batch).
"""

import dataclasses
import logging
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from proxytool.decoding.checks import alpha
from proxytool.errors import ProxyToolError

try:  # vLLM checks that a processor subclasses its base; without vLLM (tests) a plain base does
    from vllm.v1.sample.logits_processor import LogitsProcessor as _EngineBase
except ImportError:  # pragma: no cover - depends on the environment

    class _EngineBase:  # type: ignore[no-redef]
        pass


__all__ = ["ENV_ALPHAS", "ENV_ANTI_EXPERTS", "ENV_EXPERTS", "EXTRA_ARG", "PluginConfig", "ProxyTuningLogitsProcessor"]

ENV_EXPERTS = "PROXYTOOL_VLLM_EXPERTS"
ENV_ANTI_EXPERTS = "PROXYTOOL_VLLM_ANTI_EXPERTS"
ENV_ALPHAS = "PROXYTOOL_VLLM_ALPHAS"
ENV_DTYPE = "PROXYTOOL_VLLM_DTYPE"
ENV_DEVICE = "PROXYTOOL_VLLM_DEVICE"
EXTRA_ARG = "proxytool_alpha"  # the key in SamplingParams.extra_args

log = logging.getLogger("proxytool.engines.vllm")


@dataclass(frozen=True)
class PluginConfig:
    """The pairs to steer with, as the environment names them (nothing resolved or loaded)."""

    experts: tuple[str, ...] = ()
    anti_experts: tuple[str | None, ...] = ()
    alphas: tuple[float, ...] = ()
    dtype: str = "auto"
    device: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.experts)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "PluginConfig":
        """Read the ``PROXYTOOL_VLLM_*`` variables; a bad value is one ProxyToolError naming the variable."""
        env = os.environ if environ is None else environ
        experts = tuple(_names(env.get(ENV_EXPERTS, "")))
        if any(not name for name in experts):
            raise ProxyToolError(f"{ENV_EXPERTS}: an empty name in '{env[ENV_EXPERTS]}'")
        antis = tuple(name or None for name in _names(env.get(ENV_ANTI_EXPERTS, "")))
        alphas = []
        for text in _names(env.get(ENV_ALPHAS, "")):
            try:
                alphas.append(float(text))
            except ValueError:
                raise ProxyToolError(f"{ENV_ALPHAS}: '{text}' is not a number") from None
            _check_alpha(ENV_ALPHAS, alphas[-1])
        config = cls(experts, antis, tuple(alphas), env.get(ENV_DTYPE) or "auto", env.get(ENV_DEVICE) or None)
        if not experts and (antis or alphas):
            raise ProxyToolError(f"{ENV_ANTI_EXPERTS} or {ENV_ALPHAS} set without {ENV_EXPERTS}")
        if experts:
            config.setup().validate()  # counts, α and loading options, before anything loads
        return config

    def setup(self):
        """The ProxySetup of the pairs. Its base is a placeholder: the plugin loads no base of its own."""
        from proxytool.decoding.config import LoadingOptions, ProxySetup

        loading = LoadingOptions(dtype=self.dtype, device=self.device or "auto", overlap="off")
        return ProxySetup(self.experts[0], self.experts, self.anti_experts, self.alphas, loading)

    def request_alphas(self, value) -> tuple[float, ...]:
        """One request's ``extra_args[EXTRA_ARG]``: a number (every pair) or one per pair; ValueError
        (HTTP 400 in vLLM) if not finite, beyond ±MAX_ALPHA, or the wrong count."""
        if not self.enabled:
            raise ValueError(f"{EXTRA_ARG}: proxy-tuning is not configured on this server ({ENV_EXPERTS} is unset)")
        n = len(self.experts)
        values = list(value) if isinstance(value, list | tuple) else [value]
        if isinstance(value, list | tuple) and len(values) != n:
            raise ValueError(f"{EXTRA_ARG}: {len(values)} values for {n} expert pair(s) (give one, or one per pair)")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"{EXTRA_ARG} must be a number or a list of numbers (got {v!r})")
            try:
                _check_alpha(EXTRA_ARG, float(v))
            except ProxyToolError as err:
                raise ValueError(str(err)) from None
        return tuple(float(v) for v in values) * (n if len(values) == 1 else 1)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")] if text.strip() else []


def _check_alpha(flag: str, value: float) -> None:
    alpha(flag, value)  # finite, within ±MAX_ALPHA


@dataclass(eq=False)
class _Slot:
    """One steered request in a batch slot: its token ids (``output`` is vLLM's live list) and its α."""

    prompt: list[int]
    output: list[int]
    alphas: tuple[float, ...]


_LIVE: dict[int, weakref.ref] = {}  # id(vllm_config) -> the steering instance (vLLM may build the class twice)


class ProxyTuningLogitsProcessor(_EngineBase):
    """vLLM V1 logits processor: ``base + Σ α (expert − anti-expert)`` on every steered row.

    Loads the pair once per worker process (every tensor-parallel rank runs it on the same rows), and
    refuses at start, in one line, an unknown expert, a pair whose tokenizer differs from the served
    model's, a non-finite α or a context longer than the pair takes.
    """

    def __init__(self, vllm_config, device, is_pin_memory: bool = False, *, config: PluginConfig | None = None):
        self.config = config if config is not None else PluginConfig.from_env()
        self.slots: dict[int, _Slot] = {}
        self.models = None
        self.vllm_config = vllm_config  # kept: the guard below compares the object, not a reusable id
        other = _LIVE.get(id(vllm_config))
        other = other() if other is not None else None
        if not self.config.enabled or (other is not None and other.vllm_config is vllm_config):
            if self.config.enabled:  # entry point and --logits-processors both named this class
                log.info("proxytool: another instance already steers this engine; this one stays off")
            return
        import torch

        self.config = dataclasses.replace(self.config, device=self.config.device or str(torch.device(device)))
        self._load(vllm_config)
        _LIVE[id(vllm_config)] = weakref.ref(self)

    def _load(self, vllm_config) -> None:
        from proxytool.decoding.setup import load_proxy_models, resolve_roles
        from proxytool.engines.pair_batch import PairBatch

        resolved = resolve_roles(self.config.setup())
        # The pair's first anti-expert stands in as the base: it shares that model, so nothing extra loads.
        resolved = dataclasses.replace(resolved, base=resolved.pairs[0][2])
        model_config = vllm_config.model_config
        _check_served_tokenizer(model_config, resolved)
        models = load_proxy_models(resolved)
        limit = min((s.max_length for s in models.sources if s.max_length), default=None)
        served = getattr(model_config, "max_model_len", None)
        if limit is not None and served is not None and served > limit:
            raise ProxyToolError(
                f"the served context ({served} tokens) is longer than the expert pair takes ({limit}); "
                f"start vLLM with --max-model-len {limit}"
            )
        self.models = models
        self.pairs = PairBatch(models)
        self.vocab_size = len(models.tokenizer)
        log.info(
            "proxytool: steering with %d pair(s), α %s, on %s",
            len(models.pairs),
            list(self.config.setup().pair_alphas()),
            models.sources[0].device,
        )
        if not self.pairs.joinable:
            log.info("proxytool: the pair's KV caches cannot merge; it runs once per request per step")

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """A request's ``extra_args["proxytool_alpha"]``: ValueError (vLLM answers 400) when bad."""
        extra = getattr(sampling_params, "extra_args", None) or {}
        if EXTRA_ARG in extra:
            try:
                config = PluginConfig.from_env()
            except ProxyToolError as err:
                raise ValueError(str(err)) from None
            config.request_alphas(extra[EXTRA_ARG])

    def is_argmax_invariant(self) -> bool:
        return False  # steering changes which token is the most likely

    def update_state(self, batch_update) -> None:
        """Apply vLLM's batch changes in its order: removed, added, then moved (one-way or swapped)."""
        if batch_update is None or self.models is None:
            return
        for index in batch_update.removed:
            self.slots.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            slot = self._new_slot(params, prompt_ids, output_ids)
            if slot is None:
                self.slots.pop(index, None)  # the base alone (an added request may replace a slot's)
            else:
                self.slots[index] = slot
        for a, b, direction in batch_update.moved:
            first, second = self.slots.pop(a, None), self.slots.pop(b, None)
            if first is not None:
                self.slots[b] = first
            if getattr(direction, "name", str(direction)).upper().endswith("SWAP") and second is not None:
                self.slots[a] = second
        self.pairs.keep(self.slots.values())  # the pair's state of requests that left goes now

    def _new_slot(self, params, prompt_ids, output_ids) -> _Slot | None:
        extra = getattr(params, "extra_args", None) or {}
        if EXTRA_ARG in extra:
            alphas = self.config.request_alphas(extra[EXTRA_ARG])
        else:
            alphas = tuple(self.models.alphas)
        if not any(alphas):
            return None
        if prompt_ids is None:
            raise ProxyToolError("proxytool steers token prompts only (this request gave prompt embeddings)")
        return _Slot(list(prompt_ids), output_ids, alphas)

    def apply(self, logits):
        """Steer every tracked row of ``logits`` [batch, vocab] in place; padded columns get -inf.

        The pair runs once for all rows (engines/pair_batch.py); rows with the same α are combined at once.
        """
        if not self.slots:
            return logits
        if max(self.slots) >= logits.shape[0]:
            raise RuntimeError(f"proxytool: slot {max(self.slots)} is beyond the {logits.shape[0]} logits rows")
        import torch

        from proxytool.decoding.combine import Steer, proxy_scores

        last = self.pairs.advance(list(self.slots.values()))
        for alphas, indices in _by_alphas(self.slots).items():
            rows = [last[self.slots[i]][0] for i in indices]  # after its last token (no drafts in V1)
            steers = [
                Steer(alpha, _stack(rows, p, 0, logits.device), _stack(rows, p, 1, logits.device))
                for p, alpha in enumerate(alphas)
            ]
            index = torch.tensor(indices, device=logits.device)
            scores = proxy_scores(logits[index], steers, vocab_size=self.vocab_size)
            width = scores.shape[-1]
            logits[index, :width] = scores.to(logits.dtype)
            logits[index, width:] = float("-inf")
        return logits


def _by_alphas(slots: dict[int, _Slot]) -> dict[tuple[float, ...], list[int]]:
    """The batch indices of the steered rows, by their α (one combine per α)."""
    groups: dict[tuple[float, ...], list[int]] = {}
    for index, slot in slots.items():
        groups.setdefault(slot.alphas, []).append(index)
    return groups


def _stack(rows: list, pair: int, role: int, device):
    """One role's logits [rows, vocab] of pair ``pair`` (role 0: expert, 1: anti-expert)."""
    import torch

    return torch.stack([row[pair][role] for row in rows]).to(device)


def _check_served_tokenizer(model_config, resolved) -> None:
    """The served model's tokenizer must be the pair's (same ids): checked before the pair's weights load."""
    from proxytool.models.loading import check_compatible, load_tokenizer
    from proxytool.models.registry import resolve

    served_name = getattr(model_config, "tokenizer", None) or model_config.model
    tokenizers = {f"the served model ({served_name})": load_tokenizer(resolve(str(served_name)))}
    for i, (_, expert, anti) in enumerate(resolved.pairs, start=1):
        tokenizers[f"expert {i} ({expert.name})"] = load_tokenizer(expert)
        tokenizers[f"anti-expert {i} ({anti.name})"] = load_tokenizer(anti)
    check_compatible(tokenizers)
