"""`proxytool decode`: proxy-tuned generation over a prompt file."""

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from proxytool.cli import options as o
from proxytool.runtime import prepare_runtime


def register(app: typer.Typer) -> None:
    app.command("decode", help="Proxy-tuned generation over a prompts file into JSONL (resumable).")(
        o.with_loading_options(decode)
    )


# Over 60 lines: Typer declares its 20 options in the signature; the body is under 50.
def decode(
    prompts: Annotated[
        str,
        typer.Option(
            help="JSONL with prompt or messages (+ id), a text file with one prompt per line, or - for stdin."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL results, one line per prompt.")],
    base: o.Base,
    expert: o.Experts = None,
    anti_expert: o.AntiExperts = None,
    alpha: o.Alphas = None,
    max_new_tokens: o.MaxNewTokens = 128,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = 1.0,
    top_k: o.TopK = 0,
    seed: o.Seed = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts decoded together (left-padded).")] = 1,
    stop: o.Stop = None,
    speculative: o.Speculative = "0",
    draft: o.Draft = "expert",
    trace: Annotated[
        Path | None,
        typer.Option(help="Also write, per generated token, the top candidates of every model and the proxy (JSONL)."),
    ] = None,
    trace_top: Annotated[int, typer.Option(help="Candidates per model in --trace.")] = 5,
    loading: o.LoadingOptions = o.LoadingOptions(),
) -> None:
    from rich.console import Console

    from proxytool.api import ProxyTuned
    from proxytool.data.prompts import read_prompts
    from proxytool.decoding import checks as v
    from proxytool.decoding.setup import resolve_roles
    from proxytool.decoding.speculative import check_speculative, check_speculative_models, speculates
    from proxytool.decoding.to_file import DecodeOptions, check_writable, fingerprint, plan_resume

    v.generation(max_new_tokens, batch_size, stop)
    v.sampling(temperature, top_k, top_p, seed)
    setup = o.proxy_setup(loading, base, expert, anti_expert, alpha, batch=batch_size)
    setup.validate()
    speculative = o.speculative_value(speculative)
    check_speculative(speculative, draft, has_expert=bool(expert))
    _check_outputs(prompts, output, trace, trace_top, speculative)
    options = DecodeOptions(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        sampling=o.sampling_config(temperature, top_k, top_p, seed),
        stop=tuple(stop or ()),
        speculative=speculative,
        draft=draft,
    )
    for path in (output, trace):
        if path is not None:
            check_writable(path)
    items = read_prompts(prompts)
    resolved = resolve_roles(setup)  # name errors before any import-heavy work
    run = fingerprint(items, options, _models_record(resolved))
    state = plan_resume(output, items, run)  # a file proxytool did not write, or other settings: refuse now
    if state == "done":
        print(f"{output} is already complete (0 decoded now, {len(items)} already done)", file=sys.stderr)
        return
    v.device_available(loading.device)
    v.prompt_lengths(v.model_roles(resolved), items, max_new_tokens, loading.formats, prompts)
    prepare_runtime(loading.threads)
    console = Console(stderr=True)
    o.print_notes(console, resolved)
    with console.status("loading models"):
        tuned = ProxyTuned.from_setup(resolved)
    models = tuned.models
    if speculates(speculative):
        check_speculative_models(models)
    tokens, done = _decode_with_progress(console, tuned, items, output, options, run, trace, trace_top)
    console.print(f"wrote {output} ({len(items)} prompts, {done} decoded now, {len(items) - done} already done)")
    calls = models.base.source.calls()
    if calls is not None and tokens:
        requests, retries = calls
        console.print(
            f"remote base: {requests} calls for {tokens} tokens ({requests / tokens:.2f} per token), {retries} retries"
        )


def _check_outputs(prompts: str, output: Path, trace: Path | None, trace_top: int, speculative: int | str) -> None:
    """The output and trace flags' errors, before anything is read or loaded."""
    from proxytool.decoding import checks as v
    from proxytool.errors import ProxyToolError

    v.at_least("--trace-top", trace_top, 1, 1000)
    v.not_the_input(output, [prompts])
    if trace is not None:
        v.not_the_input(trace, [prompts], flag="--trace")
        from proxytool.decoding.speculative import speculates

        if speculates(speculative):  # auto traces step by step
            raise ProxyToolError("--trace needs step-by-step decoding: drop --speculative to trace")


def _decode_with_progress(console, tuned, items, output, options, run, trace, trace_top) -> tuple[int, int]:
    """Decode with a progress bar; returns (tokens generated, prompts decoded now)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from proxytool.decoding.trace import Tracer

    models = tuned.models
    columns = (TextColumn("[bold]decode"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("decode", total=options.max_new_tokens * len(items), rate="")
        clock = _TokenRate()
        generated = [0]

        def on_tokens(n: int) -> None:
            generated[0] += n
            progress.update(task, advance=n, rate=clock.update(n))

        with contextlib.ExitStack() as files:
            tracer = None
            if trace is not None:  # the trace covers the prompts decoded in this run
                tracer = Tracer(files.enter_context(open(trace, "w", encoding="utf-8")), models.tokenizer, trace_top)
            done = tuned.decode_to_file(items, output, options, on_tokens=on_tokens, run=run, tracer=tracer)
    return generated[0], done


def _models_record(resolved) -> dict:
    """The models and loading settings that shape the output (for the resume fingerprint)."""

    def ident(spec) -> str:
        parts = [spec.kind, spec.source] + ([spec.revision] if spec.revision else [])
        return ":".join(parts) + (f" on {ident(spec.base)}" if spec.base is not None else "")

    loading = resolved.setup.loading
    record = {
        "base": ident(resolved.base),
        "pairs": [{"alpha": alpha, "expert": ident(e), "anti_expert": ident(a)} for alpha, e, a in resolved.pairs],
        "formats": dict(sorted(loading.formats.items())),
        "dtype": loading.dtype,
        "quantize_base": loading.quantize_base,
    }
    if loading.plausible:  # recorded only when on, so files decoded before the option still resume
        record["plausible"] = loading.plausible
    if resolved.base.kind == "remote":  # the base's URL and model are in "base"; these shape its scores too
        record["remote"] = {
            "top_k": loading.remote_top_k,
            "extra": loading.remote_extra,
            "lookahead": loading.remote_lookahead,
            "draft": loading.remote_draft,
        }
    return record


class _TokenRate:
    """Tokens per second since the first token."""

    def __init__(self):
        self.start = None
        self.tokens = 0

    def update(self, n: int) -> str:
        import time

        now = time.perf_counter()
        if self.start is None:
            self.start = now
            return ""
        self.tokens += n
        return f"{self.tokens / max(now - self.start, 1e-9):.1f} tok/s"
