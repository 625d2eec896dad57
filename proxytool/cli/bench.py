"""`proxytool bench`: tokens/s, time to first token and peak memory against base-alone and the paper's loop."""

from pathlib import Path
from typing import Annotated

import typer

from proxytool.cli import options as o

API_LOADER = "proxytool.api.tuned:load_models"
"""How bench's modes load (each run is a child process, so by name): through ``ProxyTuned.from_setup``,
as every command does; the ``reference`` mode is the paper's loop over plain transformers models."""


def register(app: typer.Typer) -> None:
    app.command("bench", help="Time base alone vs proxy-tuned vs the paper's reference decoding loop.")(
        o.with_loading_options(bench)
    )


def bench(
    base: o.Base,
    expert: Annotated[str, typer.Option("--expert", "-e", help="The expert (a LoRA adapter shares its base).")],
    anti_expert: Annotated[str | None, typer.Option("--anti-expert", "-a", help="Default: the expert's base.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Steering weight of the pair.")] = 1.0,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8",
    modes: Annotated[
        str, typer.Option(help="Comma-separated: base, proxy, reference, engine-base, speculative.")
    ] = "base,proxy,reference",
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length in tokens.")] = 42,
    new_tokens: Annotated[int, typer.Option(help="Tokens generated per run (EOS ignored).")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed runs per case (median reported).")] = 2,
    rounds: Annotated[
        int, typer.Option(help="Runs of every mode per batch size, in alternating order, merged (mean time).")
    ] = 1,
    speculative: Annotated[int, typer.Option(help="Draft tokens per round in the speculative mode.")] = 4,
    proxy_speculative: Annotated[
        str, typer.Option(help="How the proxy mode speculates: 0 (step by step, decode's default) or auto.")
    ] = "0",
    draft: o.Draft = "expert",
    output: Annotated[Path | None, typer.Option(help="Write all figures as JSON here.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for scripts.")] = False,
    loading: o.LoadingOptions = o.LoadingOptions(),
) -> None:
    import json

    from proxytool.cli.output import console as make_console
    from proxytool.cli.output import print_json
    from proxytool.decoding import checks as v
    from proxytool.decoding.setup import resolve_roles
    from proxytool.decoding.speed import BenchConfig, agreement, machine, ratios, run
    from proxytool.files.atomic import write_text

    sizes, chosen = _check_cases(batch_sizes, modes, prompt_tokens, new_tokens, repeats, output, speculative, draft)
    v.at_least("--rounds", rounds, 1, 1000)
    v.alpha("--alpha", alpha)
    setup = o.proxy_setup(loading, base, [expert], [anti_expert] if anti_expert else [], [alpha])
    resolve_roles(setup)
    config = BenchConfig(
        setup=setup,
        batch_sizes=sizes,
        modes=chosen,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        repeats=repeats,
        rounds=rounds,
        speculative=speculative,
        proxy_speculative=o.speculative_value(proxy_speculative),
        draft=draft,
    )
    v.device_available(loading.device)
    done: list[dict] = []
    measured_on = machine()

    def document_of(results: list[dict]) -> dict:
        document = {"config": config.to_json(), "machine": measured_on, "results": results}
        return {**document, "ratios": ratios(results), "agreement": agreement(results)}

    def finished(result: dict) -> None:
        done.append(result)
        status.update(f"{result['mode']} batch {result['batch']}: {result['tokens_per_s']:.1f} tok/s")
        if output is not None:  # after every case, so a run that fails or is stopped keeps what it measured
            write_text(output, json.dumps(document_of(done), indent=2) + "\n")

    with make_console(stderr=True).status("benchmarking") as status:
        results = run(config, on_result=finished, loader=API_LOADER)
    document = document_of(results)
    _warn_disagreement(make_console(stderr=True), document["agreement"])
    if json_output:
        print_json(document)
        return
    _print_results(make_console(), document, new_tokens, prompt_tokens)


def _check_cases(batch_sizes, modes, prompt_tokens, new_tokens, repeats, output, speculative, draft):
    """The benchmark's own flags, checked before anything loads; returns (batch sizes, modes)."""
    from proxytool.decoding import checks as v
    from proxytool.decoding.speed import MODES
    from proxytool.errors import ProxyToolError

    try:
        sizes = [int(b) for b in batch_sizes.split(",")]
    except ValueError:
        raise ProxyToolError(f"--batch-sizes must be comma-separated integers (got '{batch_sizes}')") from None
    chosen = [m.strip() for m in modes.split(",")]
    for mode in chosen:
        v.one_of("--modes", mode, MODES)
    for size in sizes:
        v.at_least("--batch-sizes", size, 1, 100_000)
    v.at_least("--repeats", repeats, 1, 1000)
    v.at_least("--prompt-tokens", prompt_tokens, 1, 1_000_000)
    v.at_least("--new-tokens", new_tokens, 2, 1_000_000)
    if output is not None and output.is_dir():
        raise ProxyToolError(f"--output {output}: is a folder; give a file name")
    if "speculative" in chosen:
        from proxytool.decoding.speculative import check_speculative

        if speculative < 1:
            raise ProxyToolError(f"--speculative must be >= 1 for the speculative mode (got {speculative})")
        check_speculative(speculative, draft, has_expert=True)
    return sizes, chosen


def _warn_disagreement(console, equal: list[dict]) -> None:
    """One line per pair of modes whose greedy tokens differ (expected only from rounding, e.g. bf16)."""
    for row in equal:
        for name, counts in row.items():
            if name != "batch" and counts[0] != counts[1]:
                pair = name.replace("_vs_", " and ")
                console.print(
                    f"note: batch {row['batch']}: {pair} tokens differ on {counts[1] - counts[0]} of {counts[1]} rows"
                )


def _print_results(console, document: dict, new_tokens: int, prompt_tokens: int) -> None:
    from rich.table import Table

    results, summary, m = document["results"], document["ratios"], document["machine"]
    title = f"decoding: {new_tokens} new tokens, {prompt_tokens}-token prompts"
    table = Table(
        title=title, caption=f"{m['cores']} cores, {m['memory_gb']} GB, torch {m['torch']}, {m['gpu'] or 'CPU'}"
    )
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
    for row, equal in zip(summary, document["agreement"]):
        parts = [f"{k.replace('_vs_', '/')} = {v:.2f}x" for k, v in row.items() if k != "batch"]
        same = [f"{k.replace('_vs_', '==')} {v[0]}/{v[1]} rows" for k, v in equal.items() if k != "batch"]
        console.print(f"batch {row['batch']}: " + ", ".join(parts) + ("; tokens: " + ", ".join(same) if same else ""))
