"""What a proxy-tuning run loads and how: the one home of the loading options and their validation.

Light on purpose (no torch import): the CLI builds these objects and validates them before any
model loads; ``decoding/setup.py`` loads what they describe.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from proxytool.errors import ProxyToolError
from proxytool.models.registry import DTYPES, PROMPT_FORMATS, QUANTIZATIONS

ROLES = ("base", "expert", "anti-expert")
OVERLAP_MODES = ("auto", "on", "off")
REMOTE_DRAFTS = ("base", "pair")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MAX_THREADS = 4096
MAX_ALPHA = 1000.0  # beyond this the logit arithmetic overflows to inf/NaN in fp16/bf16 (and means nothing)


@dataclass(frozen=True)
class LoadingOptions:
    """How the models of a decoding command are loaded and run (decode, chat, eval, serve, bench)."""

    dtype: str = "auto"
    device: str = "auto"
    quantize_base: str = "none"
    base_format: str | None = None
    expert_format: str | None = None
    anti_expert_format: str | None = None
    share_weights: bool | None = None  # None: share on CPU, not on CUDA (docs/performance.md)
    overlap: str = "auto"  # run base and proxies concurrently: auto (on for CPU), on, off
    threads: int | None = None
    trust_pickle: bool = False  # allow pickled .bin weights (safetensors only otherwise)
    remote_top_k: int = 20  # a remote base (--base URL): log-probabilities per position
    remote_lookahead: int = 0  # a remote base: greedy tokens asked per call (0 = one position per call)
    remote_extra: int = 5  # a remote base: the pair's top M (and EOS) scored by the server too (logprob_token_ids)
    remote_draft: str = "pair"  # a remote base: lookahead along its greedy path only (base), or the pair's guess too
    base_api_key: str | None = None  # a remote base's key (default: $PROXYTOOL_BASE_API_KEY)

    @property
    def formats(self) -> dict[str, str]:
        """Prompt format per role, where one was given ("base", "expert", "anti-expert")."""
        given = zip(ROLES, (self.base_format, self.expert_format, self.anti_expert_format))
        return {role: fmt for role, fmt in given if fmt is not None}

    def validate(self) -> None:
        """Every option checked at once, before anything loads."""
        _one_of("--dtype", self.dtype, (*DTYPES, "fp32", "fp16", "bf16"))
        _one_of("--quantize-base", self.quantize_base, QUANTIZATIONS)
        _one_of("--overlap", self.overlap, OVERLAP_MODES)
        for role, fmt in self.formats.items():
            _one_of(f"--{role}-format", fmt, PROMPT_FORMATS)
        if not DEVICE_PATTERN.match(self.device):
            raise ProxyToolError(f"--device must be auto, cpu, mps, cuda or cuda:N (got '{self.device}')")
        _one_of("--remote-draft", self.remote_draft, REMOTE_DRAFTS)
        if self.remote_top_k < 1:
            raise ProxyToolError(f"--remote-top-k must be >= 1 (got {self.remote_top_k})")
        if self.remote_extra < 0:
            raise ProxyToolError(f"--remote-extra must be >= 0 (got {self.remote_extra})")
        if self.remote_lookahead < 0:
            raise ProxyToolError(f"--remote-lookahead must be >= 0 (got {self.remote_lookahead})")
        if self.threads is not None and self.threads < 1:
            raise ProxyToolError(f"--threads must be >= 1 (got {self.threads})")
        if self.threads is not None and self.threads > MAX_THREADS:
            raise ProxyToolError(f"--threads must be <= {MAX_THREADS} (got {self.threads})")

    def to_json(self) -> dict:
        """The options as recorded in reports and fingerprints (an API key is never written out)."""
        return {**asdict(self), "base_api_key": None if self.base_api_key is None else "(given)"}


@dataclass(frozen=True)
class ProxySetup:
    """The models of a run: a base, expert pairs (an expert's recorded base is its default anti-expert)."""

    base: str
    experts: Sequence[str] = ()
    anti_experts: Sequence[str | None] = ()
    alphas: Sequence[float] = ()
    loading: LoadingOptions = field(default_factory=LoadingOptions)

    def validate(self) -> None:
        """Counts and values of the role options, and the loading options; nothing is resolved or loaded."""
        self.loading.validate()
        if not self.base or not str(self.base).strip():
            raise ProxyToolError("--base: empty model name")
        for flag, names in (("--expert", self.experts), ("--anti-expert", self.anti_experts)):
            if any(name is not None and not str(name).strip() for name in names):
                raise ProxyToolError(f"{flag} must not be empty")
        if self.alphas and not self.experts:
            raise ProxyToolError("--alpha needs an --expert to steer with (got --alpha without --expert)")
        if len(self.anti_experts) > len(self.experts):
            raise ProxyToolError(f"{len(self.anti_experts)} --anti-expert given for {len(self.experts)} --expert")
        for alpha in self.alphas:
            if not math.isfinite(alpha):
                raise ProxyToolError(f"--alpha must be a finite number (got {alpha})")
            if abs(alpha) > MAX_ALPHA:
                raise ProxyToolError(f"--alpha must be between -{MAX_ALPHA:g} and {MAX_ALPHA:g} (got {alpha:g})")
        self.pair_alphas()

    def pair_alphas(self) -> list[float]:
        """One α per expert: none given = 1.0 each; one given = that for all; else one per expert."""
        n = len(self.experts)
        if not self.alphas:
            return [1.0] * n
        if len(self.alphas) == 1:
            return list(self.alphas) * n
        if len(self.alphas) != n:
            raise ProxyToolError(f"{len(self.alphas)} --alpha values for {n} --expert (give one, or one per expert)")
        return list(self.alphas)

    def to_json(self) -> dict:
        return asdict(self)


def _one_of(flag: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ProxyToolError(f"{flag} must be one of {', '.join(allowed)} (got '{value}')")
