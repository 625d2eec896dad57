"""What proxytool's vLLM logits processors share, whichever interface vLLM calls them through: the pairs
named by the environment, each request's α, the loaded pair and its state (engines/pair_batch.py), and
the combine that replaces a steered row of vLLM's logits by ``base + Σ α (expert − anti-expert)``.

Two thin adapters sit on it: engines/vllm.py (vLLM's V1 interface: ``update_state(BatchUpdate)`` and
``apply(logits)``) and engines/vllm_v2.py (Model Runner V2: ``add_request`` per slot and
``apply(logits, ctx)`` over rows that include speculative draft tokens). Importable without vLLM or
torch (vLLM imports every plugin of its entry-point group at start; torch loads with the pair).
"""

import dataclasses
import logging
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from proxytool.decoding.checks import alpha
from proxytool.errors import ProxyToolError

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


def validate_params(sampling_params) -> None:
    """A request's ``extra_args["proxytool_alpha"]``: ValueError (vLLM answers 400) when bad."""
    extra = getattr(sampling_params, "extra_args", None) or {}
    if EXTRA_ARG in extra:
        try:
            config = PluginConfig.from_env()
        except ProxyToolError as err:
            raise ValueError(str(err)) from None
        config.request_alphas(extra[EXTRA_ARG])


@dataclass(eq=False)
class Request:
    """One steered request: its token ids (``output`` grows between steps) and its α (hashed by identity)."""

    prompt: list[int]
    output: list[int]
    alphas: tuple[float, ...]


_LIVE: dict[int, weakref.ref] = {}  # id(vllm_config) -> the steering instance (vLLM may build the class twice)


class Steering:
    """The expert pair(s) of one vLLM engine, loaded once per worker process, and the combine.

    Off (``active`` False) when the environment names no expert, or when another instance already
    steers the same engine (the entry point and ``--logits-processors`` both name a class: the offset is
    added once). At start it refuses, in one line, an unknown expert, a pair whose tokenizer is not the
    served model's, a non-finite α or a served context longer than the pair takes.
    """

    def __init__(self, config: PluginConfig, vllm_config, device):
        self.config = config
        self.models = None
        self.pairs = None
        self.vllm_config = vllm_config  # kept: the guard below compares the object, not a reusable id
        other = _LIVE.get(id(vllm_config))
        other = other() if other is not None else None
        if not config.enabled or (other is not None and other.vllm_config is vllm_config):
            if config.enabled:
                log.info("proxytool: another instance already steers this engine; this one stays off")
            return
        import torch

        self.config = dataclasses.replace(config, device=config.device or str(torch.device(device)))
        self._load(vllm_config.model_config, speculative=getattr(vllm_config, "speculative_config", None) is not None)
        _LIVE[id(vllm_config)] = weakref.ref(self)

    @property
    def active(self) -> bool:
        return self.models is not None

    def _load(self, model_config, speculative: bool = False) -> None:
        from proxytool.decoding.setup import load_proxy_models
        from proxytool.engines.pair_batch import PairBatch

        resolved = resolve_pairs(self.config)
        check_served_tokenizer(str(getattr(model_config, "tokenizer", None) or model_config.model), resolved)
        models = load_proxy_models(resolved)
        limit = min((s.max_length for s in models.sources if s.max_length), default=None)
        served = getattr(model_config, "max_model_len", None)
        if limit is not None and served is not None and served > limit:
            raise ProxyToolError(
                f"the served context ({served} tokens) is longer than the expert pair takes ({limit}); "
                f"start vLLM with --max-model-len {limit}"
            )
        self.models = models
        self.pairs = PairBatch(models, prefill_together=not speculative)  # drafts step alone (pair_batch.py)
        self.vocab_size = len(models.tokenizer)
        log.info(
            "proxytool: steering with %d pair(s), α %s, on %s",
            len(models.pairs),
            list(self.config.setup().pair_alphas()),
            models.sources[0].device,
        )
        if not self.pairs.joinable:
            log.info("proxytool: the pair's KV caches cannot merge; it runs once per request per step")

    def alphas(self, params) -> tuple[float, ...] | None:
        """The α of a request with these SamplingParams, or None where it is left to the base alone
        (α = 0 for every pair: the pair never runs for it)."""
        extra = getattr(params, "extra_args", None) or {}
        if EXTRA_ARG in extra:
            alphas = self.config.request_alphas(extra[EXTRA_ARG])
        else:
            alphas = tuple(self.models.alphas)
        return alphas if any(alphas) else None

    def steer(self, logits, rows: list) -> object:
        """Replace each row of ``logits`` [rows, vocab] named in ``rows`` — ``(index, pair logits, α)``, the
        pair logits per pair (expert, anti-expert) [vocab] — by proxytool's formula with that row as the
        base; padded columns get -inf. One combine per distinct α."""
        import torch

        from proxytool.decoding.combine import Steer, proxy_scores

        groups: dict[tuple[float, ...], list] = {}
        for index, found, alphas in rows:
            groups.setdefault(alphas, []).append((index, found))
        for alphas, members in groups.items():
            found = [f for _, f in members]
            steers = [
                Steer(alpha, _stack(found, p, 0, logits.device), _stack(found, p, 1, logits.device))
                for p, alpha in enumerate(alphas)
            ]
            index = torch.tensor([i for i, _ in members], device=logits.device)
            scores = proxy_scores(logits[index], steers, vocab_size=self.vocab_size)
            width = scores.shape[-1]
            logits[index, :width] = scores.to(logits.dtype)
            logits[index, width:] = float("-inf")
        return logits


def _stack(rows: list, pair: int, role: int, device):
    """One role's logits [rows, vocab] of pair ``pair`` (role 0: expert, 1: anti-expert)."""
    import torch

    return torch.stack([row[pair][role] for row in rows]).to(device)


def resolve_pairs(config: PluginConfig):
    """The pairs' ResolvedSetup (names resolved, nothing loaded). The first anti-expert stands in as the
    base: the plugin loads no base of its own, and that model is loaded anyway."""
    from proxytool.decoding.setup import resolve_roles

    resolved = resolve_roles(config.setup())
    return dataclasses.replace(resolved, base=resolved.pairs[0][2])


def check_served_tokenizer(served_name: str, resolved) -> None:
    """The served model's tokenizer must be the pair's (same ids): checked before the pair's weights load."""
    from proxytool.models.loading import check_compatible, load_tokenizer
    from proxytool.models.registry import resolve

    tokenizers = {f"the served model ({served_name})": load_tokenizer(resolve(served_name))}
    for i, (_, expert, anti) in enumerate(resolved.pairs, start=1):
        tokenizers[f"expert {i} ({expert.name})"] = load_tokenizer(expert)
        tokenizers[f"anti-expert {i} ({anti.name})"] = load_tokenizer(anti)
    check_compatible(tokenizers)


class SteeringAdapter:
    """What both vLLM adapters expose of their :class:`Steering` (set as ``self.steering``)."""

    steering: Steering

    @property
    def models(self):
        return self.steering.models

    @property
    def pairs(self):
        return self.steering.pairs

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """A request's ``extra_args["proxytool_alpha"]``: ValueError (vLLM answers 400) when bad."""
        validate_params(sampling_params)
