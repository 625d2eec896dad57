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

    from proxytool.api import ProxyTuned
    from proxytool.decoding import checks as v
    from proxytool.decoding.setup import resolve_roles

    v.generation(max_new_tokens, None)
    v.text("--system", system)
    v.sampling(temperature, top_k, top_p, seed)
    setup = o.proxy_setup(loading, base, expert, anti_expert, alpha, batch=1)
    resolved = resolve_roles(setup)
    v.device_available(loading.device)
    fit = v.PromptFit(v.model_roles(resolved), loading.formats)
    prepare_runtime(loading.threads)
    interactive = sys.stdin.isatty()
    console = Console(stderr=True)
    o.print_notes(console, resolved)
    with console.status("loading models"):
        tuned = ProxyTuned.from_setup(resolved)
    session = tuned.chat(
        system, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    if interactive:
        console.print(f"[bold]proxytool chat[/] — {HELP}")
    script = None if interactive else _script_lines()
    while True:
        line = _read(console, script)
        if line is None or line.strip() == "/exit":
            break
        if not _command(line.strip(), session, console) and _fits(fit, session, line, max_new_tokens, console):
            _answer(session, line, interactive)


def _read(console, script) -> str | None:
    try:
        if script is None:
            return console.input("[bold green]you>[/] ")
        return next(script, None)
    except (EOFError, KeyboardInterrupt):
        return None


MAX_LINE = 4 * 2**20


def _script_lines():
    """The lines of a scripted chat (stdin not a terminal): bounded, and UTF-8 or a one-line error."""
    from proxytool.errors import ProxyToolError

    stream = getattr(sys.stdin, "buffer", sys.stdin)
    number = 0
    while line := stream.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise ProxyToolError(f"<stdin>:{number}: line longer than {MAX_LINE // 2**20} MiB")
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise ProxyToolError(f"<stdin>:{number}: not UTF-8 text") from None
        yield line.rstrip("\n")


def _fits(fit, session, line: str, max_new_tokens: int, console) -> bool:
    """A message that would overflow a model's context is refused (the chat goes on)."""
    from proxytool.errors import ProxyToolError

    try:
        fit.check("this message", session.messages(line), max_new_tokens)
    except ProxyToolError as err:
        console.print(f"({err}; /reset forgets the conversation)", markup=False, highlight=False)
        return False
    return True


def _command(line: str, session, console) -> bool:
    """Handle a slash command; True when the line was one."""
    from proxytool.decoding import checks as v
    from proxytool.errors import ProxyToolError

    if not line.startswith("/") or line.startswith("//"):
        return not line  # blank lines are skipped
    name, _, arg = line.partition(" ")
    if name == "/reset":
        session.reset()
        console.print("(conversation reset)")
    elif name == "/alpha":
        try:
            value = float(arg)
            v.alpha("/alpha", value)
            if not session.models.pairs:
                raise ValueError
            session.set_alpha(value)
            console.print(f"(alpha = {value})")
        except (ValueError, ProxyToolError):
            console.print(f"(/alpha needs a finite number and an --expert, got '{arg}')", markup=False)
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
