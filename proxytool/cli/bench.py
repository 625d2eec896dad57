"""`proxytool bench`: tokens/s, time to first token and peak memory against base-alone and naive."""

from pathlib import Path
from typing import Annotated

import typer

from proxytool.cli import options as o


def register(app: typer.Typer) -> None:
    app.command("bench", help="Time base alone vs proxy-tuned vs a naive three-model decoder.")(bench)


def bench(
    base: o.Base,
    expert: Annotated[str, typer.Option("--expert", "-e", help="The expert (a LoRA adapter shares its base).")],
    anti_expert: Annotated[str | None, typer.Option("--anti-expert", "-a", help="Default: the expert's base.")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8",
    modes: Annotated[
        str, typer.Option(help="Comma-separated: base, proxy, naive, engine-base, speculative.")
    ] = "base,proxy,naive",
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length in tokens.")] = 42,
    new_tokens: Annotated[int, typer.Option(help="Tokens generated per run (EOS ignored).")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed runs per case (median reported).")] = 2,
    dtype: o.Dtype = "auto",
    device: o.Device = "auto",
    quantize_base: o.QuantizeBase = "none",
    share_weights: o.ShareWeights = None,
    overlap: o.Overlap = "auto",
    threads: o.Threads = None,
    speculative: Annotated[int, typer.Option(help="Draft tokens per round in the speculative mode.")] = 4,
    draft: o.Draft = "expert",
    output: Annotated[Path | None, typer.Option(help="Write all figures as JSON here.")] = None,
) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    from proxytool.bench import MODES, BenchConfig, ratios, run
    from proxytool.decoding.setup import ProxySetup, resolve_roles
    from proxytool.errors import ProxyToolError
    from proxytool.files.atomic import write_text

    try:
        sizes = [int(b) for b in batch_sizes.split(",")]
    except ValueError:
        raise ProxyToolError(f"--batch-sizes must be comma-separated integers (got '{batch_sizes}')") from None
    chosen = [m.strip() for m in modes.split(",")]
    if any(m not in MODES for m in chosen) or any(b < 1 for b in sizes) or new_tokens < 2 or repeats < 1:
        raise ProxyToolError(
            f"--modes must be from {', '.join(MODES)}; --batch-sizes >= 1; --new-tokens >= 2; --repeats >= 1"
        )
    if "speculative" in chosen:
        from proxytool.decoding.speculative import check_speculative

        if speculative < 1:
            raise ProxyToolError(f"--speculative must be >= 1 for the speculative mode (got {speculative})")
        check_speculative(speculative, draft, has_expert=True)
    resolve_roles(ProxySetup(base=base, experts=[expert], anti_experts=[anti_expert] if anti_expert else []))
    config = BenchConfig(
        base=base,
        expert=expert,
        anti_expert=anti_expert,
        batch_sizes=sizes,
        modes=chosen,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        repeats=repeats,
        dtype=dtype,
        device=device,
        quantize_base=quantize_base,
        share_weights=share_weights,
        overlap=overlap,
        threads=threads,
        speculative=speculative,
        draft=draft,
    )
    console = Console()
    with console.status("benchmarking") as status:
        results = run(
            config, on_result=lambda r: status.update(f"{r['mode']} batch {r['batch']}: {r['tokens_per_s']:.1f} tok/s")
        )
    table = Table(title=f"decoding: {new_tokens} new tokens, {prompt_tokens}-token prompts")
    for column in ("batch", "mode", "tok/s", "ms/step", "TTFT s", "peak RSS GB", "CUDA peak GB"):
        table.add_column(column, justify="right")
    for r in results:
        cuda = "-" if r["cuda_max_allocated_gb"] is None else f"{r['cuda_max_allocated_gb']:.2f}"
        table.add_row(
            str(r["batch"]),
            r["mode"] if "speculative" not in r else f"spec k={r['speculative']}",
            f"{r['tokens_per_s']:.1f}",
            f"{r['ms_per_step']:.1f}",
            f"{r['ttft_s']:.3f}",
            f"{r['peak_rss_gb']:.2f}",
            cuda,
        )
    console.print(table)
    for r in results:
        if "speculative" in r:
            console.print(
                f"batch {r['batch']}: speculative k={r['speculative']} ({r['draft']} drafts) kept "
                f"{r['accepted_per_round']:.2f} drafts per round over {r['rounds']} rounds"
            )
    summary = ratios(results)
    for row in summary:
        parts = [f"{k.replace('_vs_', '/')} = {v:.2f}x" for k, v in row.items() if k != "batch"]
        console.print(f"batch {row['batch']}: " + ", ".join(parts))
    if output is not None:
        write_text(
            output, json.dumps({"config": config.__dict__, "results": results, "ratios": summary}, indent=2) + "\n"
        )
