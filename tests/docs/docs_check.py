"""Find the command blocks and Python snippets of the docs, and check them at parse level.

Blocks are discovered, never listed: every fenced block of README.md and docs/*.md whose language
is a shell (`bash`, `sh`, `shell`, `console`) or Python (`python`, `py`). A block is *run* by the
docs tests (tests/docs/test_docs_commands.py) unless the line before its fence says

    <!-- docs-check: parse-only: why it cannot run here (real models, a GPU, a server, ...) -->

Parse-level checks (every block, marked or not):
- each `proxytool` command names an existing subcommand, and every flag exists on it (the options its
  `--help` lists) with no more positional arguments than it takes;
- each `python SCRIPT` / `bash SCRIPT` names a file of the repository, and a Python script's flags
  exist in its argparse parser;
- every word that is a path inside one of the repository's top-level folders (`benchmarks/…`,
  `examples/…`, `tests/…`, `docs/…`, `proxytool/…`) exists, unless it is an output (`> FILE`,
  `--output FILE`);
- Python (snippets and `python -c`) compiles and imports no private name (`_fetch_parts`).

In `console` blocks only the lines after `$ ` (and their `\\` continuations) are commands.
"""

import ast
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PYTHON_LANGS = {"python", "py"}
MARKER = re.compile(r"<!--\s*docs-check:\s*parse-only\s*:\s*(?P<reason>\S.*?)\s*-->")
MARKER_LIKE = re.compile(r"<!--\s*docs-check")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")
OPERATORS = {"|", "||", "&&", ";", "&"}
REDIRECTS = {">", ">>", "<", ">&", "&>", "2>", "2>>"}
OUTPUT_FLAGS = {"--output", "-o", "--out", "--json", "--trace"}
REPO_FOLDERS = ("benchmarks/", "examples/", "tests/", "docs/", "proxytool/")
PYTHONS = {"python", "python3", ".venv/bin/python", "V/bin/python", "$PYTHON"}


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, and its marker's reason (None = run it)."""

    path: Path
    line: int
    lang: str
    text: str
    parse_only: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL_LANGS

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON_LANGS


@dataclass(frozen=True)
class Segment:
    """One simple command of a pipeline: its words (environment assignments split off) and redirections."""

    words: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.words[0] if self.words else ""


@dataclass(frozen=True)
class Command:
    """One command line of a shell block (continuations joined), split into pipeline segments."""

    line: int
    text: str
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    operators: tuple[str, ...] = ()


# ---------------------------------------------------------------- discovery


def doc_files(root: Path = REPO) -> list[Path]:
    """README.md and every docs/*.md: the pages whose blocks are checked."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def find_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of a Markdown file, with the parse-only marker on the line before it."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = _closing_fence(lines, i + 1, match["fence"])
        indent = len(match["indent"])
        body = "\n".join(line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[i + 1 : end])
        blocks.append(Block(path, i + 1, match["lang"].lower(), body, _marker_before(lines, i)))
        i = end + 1
    return blocks


def _closing_fence(lines: list[str], start: int, fence: str) -> int:
    for j in range(start, len(lines)):
        if lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0]):
            return j
    return len(lines)


def _marker_before(lines: list[str], fence_index: int) -> str | None:
    """The reason of a `<!-- docs-check: parse-only: … -->` on the line before the fence (or None).

    A comment that starts like a marker but is malformed is an error, so a typo cannot silently
    turn a parse-only block into one that runs (or the reverse).
    """
    before = lines[fence_index - 1].strip() if fence_index > 0 else ""
    if not MARKER_LIKE.search(before):
        return None
    match = MARKER.search(before)
    if match is None:
        raise ValueError(f"malformed docs-check marker before line {fence_index + 1}: {before!r}")
    return match["reason"]


def all_blocks(root: Path = REPO) -> list[Block]:
    return [block for path in doc_files(root) for block in find_blocks(path)]


INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
INLINE_PROGRAMS = ("proxytool ", "python ", "python3 ", "bash ", "PYTHONPATH=")


def inline_commands(path: Path, text: str | None = None) -> list[Command]:
    """Commands written in prose as inline code (`proxytool eval --task …`, possibly over several lines):
    checked at parse level only. Fenced blocks are left out (they are blocks)."""
    text = path.read_text(encoding="utf-8") if text is None else text
    lines = text.splitlines()
    fenced = {
        j for block in find_blocks(path, text) for j in range(block.line, block.line + block.text.count("\n") + 2)
    }
    prose = "\n".join("" if number in fenced else line for number, line in enumerate(lines, start=1))
    commands = []
    for match in INLINE.finditer(prose):
        span = " ".join(match[1].split())
        if span.startswith(INLINE_PROGRAMS) and "…" not in span:
            commands.append(parse_command(prose.count("\n", 0, match.start()) + 1, span))
    return commands


# ---------------------------------------------------------------- shell commands


def command_lines(block: Block) -> list[tuple[int, str]]:
    """(line in the file, command text) for each command of a shell block; comments dropped, continuations
    and multi-line quotes joined. In `console` blocks only `$ ` lines are commands."""
    commands, current, start, quote = [], "", 0, None
    for offset, raw in enumerate(block.text.splitlines(), start=1):
        line = raw
        if block.lang == "console" and not current:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not current:
            start = block.line + offset
        text, quote, continued = _scan_line(line, quote)
        current += text
        if quote is not None:
            current += "\n"
        elif continued:
            current += " "
        else:
            if current.strip():
                commands.append((start, current.strip()))
            current = ""
    if current.strip():
        commands.append((start, current.strip()))
    return commands


def _scan_line(line: str, quote: str | None) -> tuple[str, str | None, bool]:
    """The line without its comment, the quote still open at its end, and whether it ends in `\\`."""
    out, i = [], 0
    while i < len(line):
        char = line[i]
        if quote is None and char == "#" and (i == 0 or line[i - 1].isspace()):
            break
        if quote is None and char == "\\" and i == len(line) - 1:
            return "".join(out), None, True
        if quote is None and char == "\\" and i + 1 < len(line):
            out.append(line[i : i + 2])
            i += 2
            continue
        if char in "'\"":
            quote = char if quote is None else (None if quote == char else quote)
        out.append(char)
        i += 1
    return "".join(out), quote, False


def parse_command(line: int, text: str) -> Command:
    """Split one command into pipeline segments (shell operators and redirections understood)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.commenters = ""
    lexer.whitespace_split = True
    tokens = list(lexer)
    segments, operators, words, outputs, i = [], [], [], [], 0
    while i < len(tokens):
        token = tokens[i]
        if token in OPERATORS:
            segments.append(_segment(words, outputs))
            operators.append(token)
            words, outputs = [], []
        elif token in REDIRECTS:
            if words and words[-1] in ("1", "2"):
                words.pop()
            if i + 1 < len(tokens) and token != ">&":
                outputs.append(tokens[i + 1])
            i += 1
        else:
            words.append(token)
        i += 1
    segments.append(_segment(words, outputs))
    return Command(line, text, tuple(s for s in segments if s.words), tuple(operators))


def _segment(words: list[str], outputs: list[str]) -> Segment:
    env = []
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env.append((name, value))
    return Segment(tuple(words), tuple(env), tuple(outputs))


def block_commands(block: Block) -> list[Command]:
    return [parse_command(line, text) for line, text in command_lines(block)]


# ---------------------------------------------------------------- parse-level checks


def check_command(command: Command, inline: bool = False) -> list[str]:
    """Problems found at parse level in one command (empty: it parses). ``inline``: prose may name a
    command group alone (`proxytool models`)."""
    problems = []
    for segment in command.segments:
        problems += check_segment(segment, inline)
    return problems


def check_segment(segment: Segment, inline: bool = False) -> list[str]:
    words, program = segment.words, segment.program
    problems = _check_repo_paths(segment)
    if program == "proxytool" or program.endswith("/proxytool"):
        problems += check_proxytool(words[1:], group_alone=inline)
    elif program in PYTHONS and words[1:3] == ("-m", "proxytool"):
        problems += check_proxytool(words[3:], group_alone=inline)
    elif program in LAUNCHERS and _launched_proxytool(words) is not None:
        problems += check_proxytool(_launched_proxytool(words), group_alone=inline)
    elif program in PYTHONS and len(words) > 2 and words[1] == "-c":
        problems += check_python(words[2], "python -c")
    elif program in PYTHONS and len(words) > 1 and words[1].endswith(".py"):
        problems += check_python_script(words[1], words[2:])
    elif program == "bash" and len(words) > 1 and not (REPO / words[1]).is_file():
        problems.append(f"bash {words[1]}: no such script in the repository")
    return problems


LAUNCHERS = {"torchrun", "accelerate"}


def _launched_proxytool(words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The proxytool arguments of `torchrun … -m proxytool ARGS` or `accelerate launch … -m proxytool ARGS`."""
    for i in range(1, len(words) - 1):
        if words[i : i + 2] == ("-m", "proxytool"):
            return words[i + 2 :]
    return None


def _check_repo_paths(segment: Segment) -> list[str]:
    problems, words = [], segment.words
    script_at = 1 if segment.program in PYTHONS | {"bash"} else None  # reported by the script check
    for i, word in enumerate(words):
        is_output = i == script_at or (i > 0 and words[i - 1] in OUTPUT_FLAGS)
        if word.startswith(REPO_FOLDERS) and not is_output and not _exists_in_repo(word):
            problems.append(f"{word}: no such file or folder in the repository")
    return problems


def _exists_in_repo(word: str) -> bool:
    path = word.rstrip("/").split("::")[0]  # pytest node ids: tests/x.py::test_y
    return (REPO / path).exists()


@cache
def proxytool_command():
    import typer.main

    from proxytool.cli import app_

    return typer.main.get_command(app_)


def check_proxytool(args: tuple[str, ...] | list[str], group_alone: bool = False) -> list[str]:
    """Subcommand and flags of one `proxytool …` invocation, against the CLI itself (what `--help` lists).
    ``group_alone``: a command group without its subcommand is fine (prose naming `proxytool models`)."""
    command, path, args = proxytool_command(), ["proxytool"], list(args)
    while True:
        problems, positionals = _check_options(command, path, args)
        if problems:
            return problems
        if not hasattr(command, "commands"):
            arguments = [p for p in command.params if p.param_type_name == "argument"]
            takes = sum(p.nargs for p in arguments) if all(p.nargs >= 0 for p in arguments) else None
            if takes is not None and len(positionals) > takes:
                return [f"{' '.join(path)}: {len(positionals)} positional argument(s) {positionals}, takes {takes}"]
            return []
        if not positionals:
            return [] if "--help" in args or group_alone else [f"{' '.join(path)}: no subcommand given"]
        name = positionals[0]
        if name not in command.commands:
            return [f"{' '.join(path)}: no subcommand '{name}' (has: {', '.join(sorted(command.commands))})"]
        command, path = command.commands[name], [*path, name]
        args = args[args.index(name) + 1 :]


def _check_options(command, path: list[str], args: list[str]) -> tuple[list[str], list[str]]:
    """Unknown flags of ``command`` among ``args`` (up to its first positional if it is a group), and the
    positional words."""
    options = {}
    for param in command.params:
        if param.param_type_name == "option":
            for opt in (*param.opts, *param.secondary_opts):
                options[opt] = param
    options.setdefault("--help", None)
    positionals, i = [], 0
    while i < len(args):
        word = _unbracket(args[i])
        if word == "--":  # the rest goes to another program as it is (proxytool vllm -- VLLM_FLAGS)
            break
        if word.startswith("-") and len(word) > 1 and not _is_number(word):
            for flag in word.split("/") if "/" in word and word.startswith("--") else [word]:
                name = flag.split("=", 1)[0]
                if name not in options:
                    return [f"{' '.join(path)}: no option {name} (see '{' '.join(path)} --help')"], positionals
            param = options[word.split("/")[0].split("=", 1)[0]]
            takes_value = param is not None and not param.is_flag and param.nargs > 0 and "=" not in word
            i += 1 + (param.nargs if takes_value else 0)
            continue
        positionals.append(word)
        if hasattr(command, "commands"):
            break
        i += 1
    return [], positionals


def _unbracket(word: str) -> str:
    """`[--port` → `--port`: usage synopses write optional flags in brackets."""
    return word.strip("[]") if word.startswith("[") else word


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def check_python_script(script: str, args: tuple[str, ...]) -> list[str]:
    """The script exists in the repository and every flag passed exists in its argparse parser."""
    path = REPO / script
    if not path.is_file():
        return [f"python {script}: no such script in the repository"]
    known = argparse_flags(path)
    unknown = [w.split("=", 1)[0] for w in args if w.startswith("--") and w.split("=", 1)[0] not in known]
    return [f"python {script}: no option {flag}" for flag in unknown]


@cache
def argparse_flags(path: Path) -> frozenset[str]:
    """Every option string given to ``add_argument`` in a script (read from its source, not run)."""
    flags = {"-h", "--help"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return frozenset(flags)


def check_python(source: str, where: str) -> list[str]:
    """Python that compiles and imports no private name of proxytool."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return [f"{where}: does not compile: {err.msg} (line {err.lineno})"]
    return [f"{where}: {problem}" for problem in private_imports(tree)]


def private_imports(tree: ast.AST) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("proxytool"):
            modules = [node.module]
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            modules, names = [alias.name for alias in node.names], []
        else:
            continue
        for name in names:
            if _private(name):
                problems.append(f"imports the private name {name} from {node.module}")
        for module in modules:
            if module.startswith("proxytool") and any(_private(part) for part in module.split(".")):
                problems.append(f"imports the private module {module}")
    return problems


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def check_inline(path: Path) -> list[str]:
    """Parse-level problems of the inline commands of one page."""
    return [
        f"{path.name}:{c.line}: {problem}" for c in inline_commands(path) for problem in check_command(c, inline=True)
    ]


def check_block(block: Block) -> list[str]:
    """Every parse-level problem of a block, each prefixed with where it is."""
    if block.is_python:
        return check_python(block.text, block.where)
    problems = []
    for command in block_commands(block):
        where = f"{block.path.name}:{command.line}"
        problems += [f"{where}: {problem}" for problem in check_command(command)]
    return problems
