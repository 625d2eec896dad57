"""A tiny smoke run of benchmarks/serve_staggered.py (opt-in: `pytest -m scripts`): both batching modes
answer every request, with the same greedy text."""

import pytest
from test_docs_scripts import run_script


@pytest.mark.scripts
def test_serve_staggered_tiny(capsys):
    run_script(
        "benchmarks/serve_staggered.py",
        *("--tiny", "--threads", "1", "--requests", "3", "--max-tokens", "3", "--interval", "0.05"),
    )
    out = capsys.readouterr().out
    assert "| separate |" in out and "| continuous |" in out
    assert out.count("| 3/3 |") == 2, out
