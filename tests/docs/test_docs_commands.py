"""Every command block of README.md and docs/*.md: parsed (all of them) and run on tiny models (the unmarked).

How blocks are found and marked: tests/docs/docs_check.py. What stands in for real models and data:
tests/docs/stand_ins.py. A page's blocks run in order in one fresh working folder, so a later block may
use what an earlier one wrote (a trained expert, a trace).
"""

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_runner import run_cli
from docs_check import REPO, Block, all_blocks, block_commands, check_block, check_inline, doc_files, find_blocks
from stand_ins import build_world, register_models, substitute

STDIN_PROGRAMS = {"printf", "echo"}
BLOCKS = [b for b in all_blocks() if b.is_shell or b.is_python]
RUNNABLE_PAGES = sorted({b.path for b in BLOCKS if b.parse_only is None})


def _page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_block_parses(block):
    """Subcommands, flags, scripts and repository paths exist; Python compiles, imports nothing private."""
    assert check_block(block) == []


@pytest.mark.parametrize("page", doc_files(), ids=_page_id)
def test_inline_commands_parse(page):
    """Commands written inline in prose (`proxytool eval --task …`) pass the same parse-level checks."""
    assert check_inline(page) == []


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("docs_world")
    return root, build_world(root, tiny_models)


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=_page_id)
def test_unmarked_blocks_run(page, world, tmp_path, monkeypatch):
    """Each unmarked block runs as written (stand-ins aside) and every command exits 0."""
    root, models = world
    workdir = tmp_path / "repo"
    shutil.copytree(root / "repo", workdir)
    (tmp_path / "shared").symlink_to(root / "shared")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PROXYTOOL_HOME", str(tmp_path / "home"))
    register_models(models)
    monkeypatch.setattr("proxytool.models.packs.pip_install", _no_downloads)
    for block in find_blocks(page):
        if block.parse_only is None and (block.is_shell or block.is_python):
            run_block(block, models, monkeypatch)


def _no_downloads(specs, target, progress):
    pytest.fail(f"a documented command tried to download {specs[0]}…: add a stand-in (tests/docs/stand_ins.py)")


def run_block(block: Block, models: dict, monkeypatch) -> None:
    if block.is_python:
        exec(compile(block.text, block.where, "exec"), {"__name__": "__docs__"})
        return
    for command in block_commands(block):
        where = f"{block.path.name}:{command.line}"
        run_command(where, command, models, monkeypatch)


def run_command(where: str, command, models: dict, monkeypatch) -> None:
    """One command line: `proxytool …`, optionally fed by `printf …|` / `echo …|`. Anything else fails,
    telling the writer to mark the block parse-only."""
    segments, stdin = list(command.segments), ""  # nothing piped: an empty stdin, never the terminal
    assert set(command.operators) <= {"|"}, f"{where}: cannot run '{command.text}' here; mark the block parse-only"
    if len(segments) == 2 and segments[0].program in STDIN_PROGRAMS:
        stdin = subprocess.run(list(segments[0].words), capture_output=True, text=True, check=True).stdout
        segments = segments[1:]
    [segment] = segments
    assert segment.program == "proxytool" and not segment.outputs, (
        f"{where}: cannot run '{command.text}' here (only proxytool commands, fed by printf/echo, run); "
        "mark the block `<!-- docs-check: parse-only: why -->`"
    )
    with _environment(dict(segment.env), monkeypatch):
        code, out, err = run_cli(*substitute(segment.words[1:], models), stdin=stdin)
    assert code == 0, f"{where}: '{command.text}' exited {code}\n{err[-3000:]}"


@contextmanager
def _environment(env: dict, monkeypatch):
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, os.path.expandvars(value))
        yield
