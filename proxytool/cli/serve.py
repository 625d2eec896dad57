"""`proxytool serve`: an OpenAI-compatible API and a web chat page over proxy-tuned models."""

from typing import Annotated

import typer

from proxytool.cli import options as o
from proxytool.runtime import prepare_runtime


def register(app: typer.Typer) -> None:
    app.command(
        "serve", help="OpenAI-compatible API (/v1/completions, /v1/chat/completions) and a web chat page at /."
    )(o.with_loading_options(serve))


# Over 60 lines: Typer declares its options in the signature; the body is 40 lines.
def serve(
    base: o.Base,
    expert: o.Experts = None,
    anti_expert: o.AntiExperts = None,
    alpha: o.Alphas = None,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 exposes the server to the network).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="PROXYTOOL_API_KEY", help="Require 'Authorization: Bearer KEY'.")
    ] = None,
    model_name: Annotated[str, typer.Option(help="The model id clients ask for.")] = "proxytool",
    max_batch: Annotated[int, typer.Option(help="Most requests decoded at once (batched when settings match).")] = 8,
    max_queue: Annotated[int, typer.Option(help="Most requests waiting; more are answered 429.")] = 64,
    batching: Annotated[
        str,
        typer.Option(
            help="continuous: requests join the running batch at its next step and leave it when they end; "
            "separate: batches started at different times alternate steps (docs/serving.md)."
        ),
    ] = "continuous",
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes (413 above).")] = 4 * 1024 * 1024,
    max_logprobs: Annotated[int, typer.Option(help="Most top log-probabilities per position (vLLM's flag).")] = 20,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option(help="Also serve requests whose Host header is this name (repeat it; '*' serves any)."),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Let web pages of this origin (e.g. http://localhost:3000) read replies (repeat it)."),
    ] = None,
    shutdown_grace: Annotated[
        float, typer.Option(help="Seconds open requests may finish after SIGTERM or Ctrl-C; then they get 503.")
    ] = 10.0,
    loading: o.LoadingOptions = o.LoadingOptions(),
) -> None:
    from rich.console import Console

    from proxytool.api import ProxyTuned
    from proxytool.decoding.setup import resolve_roles
    from proxytool.errors import ProxyToolError
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.scheduler import check_batching
    from proxytool.serving.server import check_bindable
    from proxytool.serving.server import serve as run_server

    for flag, value, least in (
        ("--max-batch", max_batch, 1),
        ("--max-queue", max_queue, 0),
        ("--max-body", max_body, 1),
    ):
        if value < least:
            raise ProxyToolError(f"{flag} must be >= {least} (got {value})")
    check_batching(batching)
    if not 0 < port < 65536:
        raise ProxyToolError(f"--port must be in 1..65535 (got {port})")
    if not 0 <= shutdown_grace <= 3600:
        raise ProxyToolError(f"--shutdown-grace must be in 0..3600 seconds (got {shutdown_grace:g})")
    setup = o.proxy_setup(loading, base, expert, anti_expert, alpha)
    resolved = resolve_roles(setup)  # every check and name error before any import-heavy work
    check_bindable(host, port)  # a port in use is found before the models load
    prepare_runtime(loading.threads)
    console = Console(stderr=True)
    o.print_notes(console, resolved)
    with console.status("loading models"):
        models = ProxyTuned.from_setup(resolved).models
    config = ServerConfig(
        model_name=model_name,
        expert_names=tuple(expert or ()),
        api_key=api_key,
        max_batch=max_batch,
        max_queue=max_queue,
        batching=batching,
        max_body_bytes=max_body,
        max_logprobs=max_logprobs,
        host=host,
        allowed_hosts=tuple(allowed_hosts or ()),
        cors_origins=tuple(cors_origin or ()),
    )
    console.print(f"serving '{model_name}' on http://{host}:{port}  (web page: /, API: /v1)")
    run_server(models, config, host, port, shutdown_grace)
