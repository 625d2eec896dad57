"""Options shared by every command that decodes (decode, chat, eval): defined once."""

import functools
import inspect
from dataclasses import replace
from typing import Annotated

import typer

from proxytool.decoding.config import LoadingOptions, ProxySetup
from proxytool.errors import ProxyToolError

Base = Annotated[
    str,
    typer.Option(
        "--base",
        "-b",
        help="Base model M: registry name, path, GGUF file, hub id, or an OpenAI-compatible server "
        "http(s)://HOST:PORT/v1[#MODEL] (docs/remote.md).",
    ),
]
Experts = Annotated[
    list[str] | None,
    typer.Option("--expert", "-e", help="Expert M+ (repeatable). A proxytool checkpoint implies its anti-expert."),
]
AntiExperts = Annotated[
    list[str] | None,
    typer.Option(
        "--anti-expert", "-a", help="Anti-expert M- for the expert in the same position (default: the expert's base)."
    ),
]
Alphas = Annotated[
    list[float] | None,
    typer.Option("--alpha", help="Steering weight: one for all experts, or one per --expert (default 1.0)."),
]
Dtype = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16/fp16 on GPU), float32, float16, bfloat16.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")]
QuantizeBase = Annotated[str, typer.Option(help="Load the base with bitsandbytes: none, 4bit (NF4) or 8bit.")]
BaseFormat = Annotated[str | None, typer.Option(help="Prompt format of the base: chat or raw (default: registry).")]
ExpertFormat = Annotated[str | None, typer.Option(help="Prompt format of the experts: chat or raw.")]
AntiFormat = Annotated[str | None, typer.Option("--anti-expert-format", help="Prompt format of the anti-experts.")]
ShareWeights = Annotated[
    bool | None,
    typer.Option(
        "--share-weights/--no-share-weights",
        help="Run a LoRA expert and its anti-expert on one copy of the small model (one batched forward). "
        "Default: on for CPU, off for CUDA.",
    ),
]
Overlap = Annotated[
    str, typer.Option(help="Run the base and the proxies concurrently: auto (on for CPU with 2+ threads), on, off.")
]
RemoteTopK = Annotated[int, typer.Option(help="Remote base: top-K log-probabilities per position (others: -inf).")]
RemoteLookahead = Annotated[
    int, typer.Option(help="Remote base: greedy tokens asked per call, used while decoding follows them (0 = off).")
]
RemoteExtra = Annotated[
    int,
    typer.Option(
        help="Remote base: also score the local pair's top M candidates and EOS where the server takes "
        "logprob_token_ids (proxytool serve), so they can win outside the top K (0 = off)."
    ),
]
RemoteDraft = Annotated[
    str,
    typer.Option(
        help="Remote base lookahead along: base (the server's greedy tokens) or pair (also the local pair's "
        "guess, scored by the server in the same call; better when the proxy departs from the base)."
    ),
]
BaseApiKey = Annotated[
    str | None, typer.Option(help="Remote base: API key (default: $PROXYTOOL_BASE_API_KEY).", show_default=False)
]
KvCache = Annotated[
    str,
    typer.Option(
        help="KV caches: dynamic (grow as needed), or static (fixed size, one shape per decode step: "
        "what CUDA graphs need; docs/performance.md)."
    ),
]
Compile = Annotated[
    str, typer.Option(help="torch.compile the models: auto (on with --kv-cache static on CUDA), on, off.")
]
PackWeights = Annotated[
    str,
    typer.Option(
        help="How linear weights are laid out: auto (the large layers of fp32 models on a CPU, in the layout "
        "timed fastest on this machine at the command's batch size, once, cached; docs/performance.md), "
        "on (every layer reordered for oneDNN), blocked (every layer in oneDNN's blocked format for the batch size), "
        "transposed (every layer stored [in, out]), off (torch's own kernels)."
    ),
]
CrossTokenizer = Annotated[
    str,
    typer.Option(
        help="A base whose tokenizer the pair does not share: auto (fast when the tokenizers differ), fast "
        "(the pair scores each candidate's text along one tokenization), exact (summed over tokenizations), "
        "off (refuse; docs/cross_tokenizer.md)."
    ),
]
CrossTopK = Annotated[
    int, typer.Option(help="Across tokenizers: the base's top-K tokens the pair scores per position.")
]
BaseTokenizer = Annotated[
    str | None,
    typer.Option(
        help="A remote base's tokenizer when the pair does not share it: a model name or path whose tokenizer "
        "the server uses.",
        show_default=False,
    ),
]
Plausible = Annotated[
    float,
    typer.Option(
        help="Steer only among tokens the base or an expert finds plausible: at least this share of that "
        "model's top token's probability (0 = off). Removes junk glued to answers (docs/decoding.md).",
    ),
]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")]
TrustPickle = Annotated[
    bool,
    typer.Option(
        "--trust-pickle", help="Allow pickled .bin weights (they can run code when loaded); default: safetensors only."
    ),
]
MaxNewTokens = Annotated[int, typer.Option(help="Most tokens to generate per prompt.")]
Temperature = Annotated[float, typer.Option(help="0 = greedy.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling threshold (1 = off).")]
TopK = Annotated[int, typer.Option(help="Keep the k best tokens (0 = off).")]
Seed = Annotated[int, typer.Option(help="Sampling seed (each prompt gets its own stream).")]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")]
Speculative = Annotated[
    str,
    typer.Option(
        help="Speculative proxy decoding: the expert drafts K tokens, base and pair verify them in one "
        "forward (0 = off, the default). Greedy output is unchanged; sampling keeps the same distribution. "
        "auto: greedy rounds plain or speculative (K = 2), whichever measures faster here."
    ),
]


def speculative_value(text: str) -> int | str:
    """``--speculative``'s value: ``auto`` or a whole number (a one-line error otherwise)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ProxyToolError(f"--speculative must be auto or a whole number >= 0 (got '{text}')") from None


Draft = Annotated[str, typer.Option(help="What drafts with --speculative: expert or small-proxy.")]


def proxy_setup(
    loading: LoadingOptions, base: str, experts=(), anti_experts=(), alphas=(), batch: int | None = None
) -> ProxySetup:
    """The run's ProxySetup from a command's role options (None = not given) and its loading options;
    ``batch``: the prompts it decodes together, where it knows (the weight layout is chosen for it)."""
    return ProxySetup(
        base=base,
        experts=list(experts or []),
        anti_experts=list(anti_experts or []),
        alphas=list(alphas or []),
        loading=replace(loading, expected_batch=batch),
    )


_LOADING_TYPES = {
    "dtype": Dtype,
    "device": Device,
    "quantize_base": QuantizeBase,
    "base_format": BaseFormat,
    "expert_format": ExpertFormat,
    "anti_expert_format": AntiFormat,
    "share_weights": ShareWeights,
    "overlap": Overlap,
    "threads": Threads,
    "trust_pickle": TrustPickle,
    "remote_top_k": RemoteTopK,
    "remote_lookahead": RemoteLookahead,
    "remote_extra": RemoteExtra,
    "remote_draft": RemoteDraft,
    "base_api_key": BaseApiKey,
    "kv_cache": KvCache,
    "compile": Compile,
    "pack_weights": PackWeights,
    "cross_tokenizer": CrossTokenizer,
    "cross_top_k": CrossTopK,
    "base_tokenizer": BaseTokenizer,
    "plausible": Plausible,
}


def with_loading_options(command):
    """Give a Typer command the shared loading options; it receives them as one ``loading`` argument."""
    own = inspect.signature(command)
    defaults = LoadingOptions()
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=getattr(defaults, name))
        for name, kind in _LOADING_TYPES.items()
    ]
    kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values() if p.name != "loading"]

    @functools.wraps(command)
    def run(**kwargs):
        loading = LoadingOptions(**{name: kwargs.pop(name) for name in _LOADING_TYPES})
        return command(loading=loading, **kwargs)

    run.__signature__ = own.replace(parameters=kept + added)
    return run


def print_notes(console, resolved) -> None:
    """The resolved setup's notes for the user (where a default α came from), one line each, on stderr."""
    for note in resolved.notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)


def sampling_config(temperature, top_k, top_p, seed):
    from proxytool.decoding.sampling import SamplingConfig

    return SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
