"""The docs checker itself, on small synthetic Markdown: each check fails on a deliberately broken block."""

from pathlib import Path

import pytest
from docs_check import (
    block_commands,
    check_block,
    check_inline,
    command_lines,
    find_blocks,
    parse_command,
)


def _blocks(tmp_path: Path, markdown: str):
    page = tmp_path / "page.md"
    page.write_text(markdown, encoding="utf-8")
    return find_blocks(page)


def _problems(tmp_path: Path, markdown: str) -> list[str]:
    return [p for block in _blocks(tmp_path, markdown) if block.is_shell or block.is_python for p in check_block(block)]


def test_a_good_block_passes(tmp_path):
    good = "```bash\nproxytool decode --base B --expert E --prompts p.jsonl -o out.jsonl --alpha 0.5\n```\n"
    assert _problems(tmp_path, good) == []


@pytest.mark.parametrize(
    "command, expected",
    [
        ("proxytool decode --base B --no-such-flag 3", "no option --no-such-flag"),
        ("proxytool decodee --base B", "no subcommand 'decodee'"),
        ("proxytool models instal qwen", "no subcommand 'instal'"),
        ("proxytool models", "no subcommand given"),
        ("proxytool merge runs/x extra", "2 positional argument(s)"),
        ("proxytool --debug eval --task polls --alpah 1", "no option --alpah"),
        ("python benchmarks/no_such.py --x 1", "no such script"),
        ("python benchmarks/make_random_models.py --tokenizr DIR", "no option --tokenizr"),
        ("bash examples/no_such.sh", "no such script"),
        ("PYTHONPATH=. pytest tests/decoding/no_such_test.py", "no such file or folder"),
        ("python -c 'from proxytool.models.packs import _fetch_parts'", "private name _fetch_parts"),
        ("python -c 'import proxytool.models._hidden'", "private module"),
        ("python -c 'def f(:'", "does not compile"),
        ("torchrun --nproc_per_node 2 -m proxytool train --batch-siz 2", "no option --batch-siz"),
        ("accelerate launch --multi_gpu --num_processes 2 -m proxytool trian", "no subcommand 'trian'"),
    ],
)
def test_a_broken_command_fails(tmp_path, command, expected):
    problems = _problems(tmp_path, f"```bash\n{command}\n```\n")
    assert len(problems) == 1 and expected in problems[0], problems
    assert problems[0].startswith("page.md:2: ")  # names the file and line


def test_a_broken_flag_on_a_continuation_line_and_in_a_console_block(tmp_path):
    markdown = (
        "```bash\nproxytool decode --base B \\\n    --expert E --temprature 0.7 -o x\n```\n\n"
        "```console\n$ proxytool chat --base B --aplha 2\n some output --not-a-flag\n```\n"
    )
    problems = _problems(tmp_path, markdown)
    assert [p.split(": ", 1)[0] for p in problems] == ["page.md:2", "page.md:7"]
    assert "--temprature" in problems[0] and "--aplha" in problems[1]


def test_parse_only_blocks_still_get_the_parse_level_checks(tmp_path):
    markdown = "<!-- docs-check: parse-only: needs a GPU -->\n```bash\nproxytool bench --base B --gpu-only\n```\n"
    [block] = _blocks(tmp_path, markdown)
    assert block.parse_only == "needs a GPU"
    assert "no option --gpu-only" in check_block(block)[0]


def test_a_malformed_marker_is_an_error_not_a_silent_change(tmp_path):
    with pytest.raises(ValueError, match="malformed docs-check marker"):
        _blocks(tmp_path, "<!-- docs-check: parse only -->\n```bash\nproxytool env\n```\n")
    [block] = _blocks(tmp_path, "<!-- a comment -->\n```bash\nproxytool env\n```\n")
    assert block.parse_only is None


def test_python_snippets_are_checked(tmp_path):
    assert _problems(tmp_path, "```python\nimport json\nprint(json.dumps(1))\n```\n") == []
    broken = _problems(tmp_path, "```python\nfrom proxytool.models.packs import _fetch_parts\nfor x in y\n```\n")
    assert len(broken) == 1 and "does not compile" in broken[0]
    private = _problems(tmp_path, "```python\nfrom proxytool.models.packs import _fetch_parts\n```\n")
    assert "private name _fetch_parts" in private[0]


def test_usage_synopsis_brackets_and_alternatives(tmp_path):
    ok = "```bash\nproxytool eval --task T [--limit N] \\\n   [--share-weights/--no-share-weights]\n```\n"
    assert _problems(tmp_path, ok) == []
    bad = "```bash\nproxytool eval --task T [--limit N] [--share-weights/--no-shared-weights]\n```\n"
    assert "no option --no-shared-weights" in _problems(tmp_path, bad)[0]


def test_comments_quotes_and_operators():
    [block] = find_blocks(
        Path("x.md"),
        "```bash\n# it's a comment with a quote\ncurl -d '{\n  \"a\": 1}' url   # trailing\n"
        "printf 'a\\nb' | proxytool chat --base B && echo done > log.txt\n```\n",
    )
    lines = command_lines(block)
    assert [line for line, _ in lines] == [3, 5]
    [curl, chat] = block_commands(block)
    assert curl.segments[0].words == ("curl", "-d", '{\n  "a": 1}', "url")
    assert [s.program for s in chat.segments] == ["printf", "proxytool", "echo"]
    assert chat.operators == ("|", "&&") and chat.segments[2].outputs == ("log.txt",)
    env = parse_command(1, "A=1 B=$X proxytool env").segments[0]
    assert env.env == (("A", "1"), ("B", "$X")) and env.words == ("proxytool", "env")


def test_inline_commands_in_prose(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `proxytool eval --task gsm8k` or `proxytool models`; not `proxytool eval gsm8k`,\n"
        "nor `proxytool decode\n--bad-flag 1`.\n\n```bash\nproxytool env --bad-in-block\n```\n",
        encoding="utf-8",
    )
    problems = check_inline(page)
    assert len(problems) == 2, problems
    assert "takes 0" in problems[0] and problems[0].startswith("page.md:1: ")
    assert "no option --bad-flag" in problems[1]
