"""Options shared by every command that decodes (decode, chat, eval): defined once."""

from typing import Annotated

import typer

Base = Annotated[str, typer.Option("--base", "-b", help="Base model M: registry name, path, GGUF file or hub id.")]
Experts = Annotated[list[str] | None, typer.Option(
    "--expert", "-e", help="Expert M+ (repeatable). A proxytool checkpoint implies its anti-expert.")]
AntiExperts = Annotated[list[str] | None, typer.Option(
    "--anti-expert", "-a", help="Anti-expert M- for the expert in the same position (default: the expert's base).")]
Alphas = Annotated[list[float] | None, typer.Option(
    "--alpha", help="Steering weight: one for all experts, or one per --expert (default 1.0).")]
Dtype = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16/fp16 on GPU), float32, float16, bfloat16.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")]
QuantizeBase = Annotated[str, typer.Option(help="Load the base with bitsandbytes: none, 4bit (NF4) or 8bit.")]
BaseFormat = Annotated[str | None, typer.Option(help="Prompt format of the base: chat or raw (default: registry hint).")]
ExpertFormat = Annotated[str | None, typer.Option(help="Prompt format of the experts: chat or raw.")]
AntiFormat = Annotated[str | None, typer.Option("--anti-expert-format", help="Prompt format of the anti-experts.")]
ShareWeights = Annotated[bool | None, typer.Option(
    "--share-weights/--no-share-weights",
    help="Run a LoRA expert and its anti-expert on one copy of the small model (one batched forward). "
         "Default: on for CPU, off for CUDA.")]
Overlap = Annotated[str, typer.Option(
    help="Run the base and the proxies concurrently: auto (on for CPU with 2+ threads), on, off.")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")]
MaxNewTokens = Annotated[int, typer.Option(help="Most tokens to generate per prompt.")]
Temperature = Annotated[float, typer.Option(help="0 = greedy.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling threshold (1 = off).")]
TopK = Annotated[int, typer.Option(help="Keep the k best tokens (0 = off).")]
Seed = Annotated[int, typer.Option(help="Sampling seed (each prompt gets its own stream).")]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")]


def proxy_setup(base, experts, anti_experts, alphas, dtype, device, quantize_base, base_format,
                expert_format, anti_format, share_weights, overlap="auto"):
    """Turn the shared options into a ProxySetup."""
    from proxytool.decoding.build import ProxySetup

    formats = {role: fmt for role, fmt in (("base", base_format), ("expert", expert_format),
                                            ("anti-expert", anti_format)) if fmt is not None}
    return ProxySetup(base=base, experts=experts or [], anti_experts=anti_experts or [], alphas=alphas or [],
                      dtype=dtype, device=device, quantize_base=quantize_base, formats=formats,
                      share_weights=share_weights, overlap=overlap)


def prepare_runtime(threads: int | None) -> None:
    """Quiet library progress bars and warnings, set the thread count."""
    import logging
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if threads is not None:
        if threads < 1:
            from proxytool.errors import ProxyToolError

            raise ProxyToolError(f"--threads must be >= 1 (got {threads})")
        torch.set_num_threads(threads)


def sampling_config(temperature, top_k, top_p, seed):
    from proxytool.decoding.sampling import SamplingConfig

    return SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
