"""What a proxy-tuning run loads and how: the one home of the loading options and their validation.

Light on purpose (no torch import): the CLI builds these objects and validates them before any
model loads; ``decoding/setup.py`` loads what they describe.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from proxytool.decoding.checks import MAX_THREADS, alpha, at_least, device, finite, one_of
from proxytool.errors import ProxyToolError
from proxytool.models.registry import DTYPE_ALIASES, DTYPES, PROMPT_FORMATS, QUANTIZATIONS

ROLES = ("base", "expert", "anti-expert")
CROSS_MODES = ("auto", "off", "fast", "exact")
KV_CACHES = ("dynamic", "static")
COMPILE_MODES = ("auto", "on", "off")
OVERLAP_MODES = ("auto", "on", "off")
PACK_MODES = ("auto", "on", "blocked", "transposed", "off")
ONEDNN_PACK_MODES = ("on", "blocked")
"""The ``--pack-weights`` modes that lay every weight out for oneDNN: CPU only, not with ``--compile on``."""
REMOTE_DRAFTS = ("base", "pair")
PLAUSIBLE_DEFAULT = 0.0
"""``--plausible``: keep tokens with at least this share of the top token's probability under the base
or an expert (0 = off); chosen from the measurement in docs/results.md ("Clean answers")."""


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
    kv_cache: str = "dynamic"  # dynamic, or static: fixed-size caches and one step shape (CUDA graphs)
    compile: str = "auto"  # torch.compile the models: auto (on with a static cache on CUDA), on, off
    pack_weights: str = "auto"  # weight layout: auto (timed), on, blocked, transposed, off (models/packed.py)
    expected_batch: int | None = None  # prompts per step, where the command knows it: auto's layout is timed there
    cross_tokenizer: str = "auto"  # a base in another tokenizer: auto, off, fast, exact (cross_tokenizer.py)
    cross_top_k: int = 20  # across tokenizers: the base's top-K candidates the pair scores
    base_tokenizer: str | None = None  # a remote base's tokenizer where the pair's differs (a model name or path)
    plausible: float = PLAUSIBLE_DEFAULT  # steer only among tokens the base or an expert finds plausible (combine.py)

    @property
    def formats(self) -> dict[str, str]:
        """Prompt format per role, where one was given ("base", "expert", "anti-expert")."""
        given = zip(ROLES, (self.base_format, self.expert_format, self.anti_expert_format))
        return {role: fmt for role, fmt in given if fmt is not None}

    def validate(self) -> None:
        """Every option checked at once, before anything loads."""
        one_of("--dtype", self.dtype, (*DTYPES, *DTYPE_ALIASES))
        one_of("--quantize-base", self.quantize_base, QUANTIZATIONS)
        one_of("--overlap", self.overlap, OVERLAP_MODES)
        for role, fmt in self.formats.items():
            one_of(f"--{role}-format", fmt, PROMPT_FORMATS)
        device(self.device)
        one_of("--remote-draft", self.remote_draft, REMOTE_DRAFTS)
        at_least("--remote-top-k", self.remote_top_k, 1)
        at_least("--remote-extra", self.remote_extra, 0)
        at_least("--remote-lookahead", self.remote_lookahead, 0)
        at_least("--threads", self.threads, 1, MAX_THREADS)
        one_of("--kv-cache", self.kv_cache, KV_CACHES)
        one_of("--compile", self.compile, COMPILE_MODES)
        one_of("--pack-weights", self.pack_weights, PACK_MODES)
        at_least("--batch-size", self.expected_batch, 1)
        if self.pack_weights in ONEDNN_PACK_MODES and self.compile == "on":
            raise ProxyToolError(
                f"--pack-weights {self.pack_weights} and --compile on exclude each other"
                " (compiled models make their own kernels)"
            )
        one_of("--cross-tokenizer", self.cross_tokenizer, CROSS_MODES)
        at_least("--cross-top-k", self.cross_top_k, 1, 4096)
        finite("--plausible", self.plausible, 0.0, 1.0)
        if self.base_tokenizer is not None and not self.base_tokenizer.strip():
            raise ProxyToolError("--base-tokenizer must not be empty")

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
        for value in self.alphas:
            alpha("--alpha", value)
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
