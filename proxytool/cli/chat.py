"""`proxytool chat`: streaming proxy-tuned chat; scriptable when stdin is not a terminal."""

import sys
from typing import Annotated

import typer

from proxytool.cli import options as o
from proxytool.runtime import prepare_runtime

HELP = "commands: /reset (forget the conversation), /alpha X (steering weight), /exit"


def register(app: typer.Typer) -> None:
    app.command("chat", help="Streaming proxy-tuned chat (/reset, /alpha X, /exit).")(o.with_loading_options(chat))


def chat(
    base: o.Base,
    expert: o.Experts = None,
    anti_expert: o.AntiExperts = None,
    alpha: o.Alphas = None,
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    max_new_tokens: o.MaxNewTokens = 256,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = 1.0,
    top_k: o.TopK = 0,
    seed: o.Seed = 0,
    loading: o.LoadingOptions = o.LoadingOptions(),
) -> None:
    from rich.console import Console

    from proxytool.decoding.chat import ChatSession
    from proxytool.decoding.setup import load_proxy_models, resolve_roles

    setup = o.proxy_setup(loading, base, expert, anti_expert, alpha)
    resolved = resolve_roles(setup)
    prepare_runtime(loading.threads)
    interactive = sys.stdin.isatty()
    console = Console(stderr=True)
    with console.status("loading models"):
        models = load_proxy_models(resolved)
    session = ChatSession(
        models,
        sampling=o.sampling_config(temperature, top_k, top_p, seed),
        max_new_tokens=max_new_tokens,
        system=system,
    )
    if interactive:
        console.print(f"[bold]proxytool chat[/] — {HELP}")
    while True:
        line = _read(console, interactive)
        if line is None or line.strip() == "/exit":
            break
        if not _command(line.strip(), session, console):
            _answer(session, line, interactive)


def _read(console, interactive: bool) -> str | None:
    try:
        if interactive:
            return console.input("[bold green]you>[/] ")
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None
    except (EOFError, KeyboardInterrupt):
        return None


def _command(line: str, session, console) -> bool:
    """Handle a slash command; True when the line was one."""
    if not line.startswith("/") or line.startswith("//"):
        return not line  # blank lines are skipped
    name, _, arg = line.partition(" ")
    if name == "/reset":
        session.reset()
        console.print("(conversation reset)")
    elif name == "/alpha":
        try:
            session.set_alpha(float(arg))
            console.print(f"(alpha = {float(arg)})")
        except ValueError:
            console.print(f"(/alpha needs a number, got '{arg}')")
    else:
        console.print(f"(unknown command {name}; {HELP})")
    return True


def _answer(session, line: str, interactive: bool) -> None:
    out = sys.stdout
    if interactive:
        out.write("bot> ")
    for piece in session.reply(line):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
