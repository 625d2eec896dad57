"""`proxytool decode --trace`: every role's top candidates per generated token, equal to teacher-forced scoring."""

import json

import pytest
from cli_runner import run_cli


def test_decode_trace(tiny_models, tmp_path):
    from proxytool.decoding.scoring import continuation_logprobs
    from proxytool.decoding.setup import ProxySetup, load_proxy_models

    prompts = tmp_path / "p.txt"
    prompts.write_text("Who leads the poll?\nA sample of adults\nHello\n")
    out, trace = tmp_path / "out.jsonl", tmp_path / "trace.jsonl"
    t = tiny_models
    args = ["--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"], "--alpha", "1.5"]
    code, _, err = run_cli(
        "decode", "--prompts", prompts, "--output", out, *args, "--max-new-tokens", "6", "--batch-size", "2",
        "--stop", "ab", "--trace", trace, "--trace-top", "3", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    results = [json.loads(line) for line in out.read_text().splitlines()]
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(lines) == sum(len(r["token_ids"]) for r in results)
    models = load_proxy_models(
        ProxySetup(base=str(t["base"]), experts=[str(t["expert"])], anti_experts=[str(t["anti"])], alphas=[1.5])
    )
    for r in results:
        mine = [line for line in lines if line["id"] == r["id"]]
        assert [line["token_id"] for line in mine] == r["token_ids"]
        assert [line["step"] for line in mine] == list(range(len(mine)))
        expected = continuation_logprobs(models, [r["prompt"]], [r["token_ids"]])[0]
        assert [line["logprob"]["proxy"] for line in mine] == pytest.approx(expected, abs=1e-3)
        for line in mine:
            assert set(line["top"]) == {"base", "expert", "anti-expert", "proxy"}
            assert all(len(top) == 3 for top in line["top"].values())
            assert line["top"]["proxy"][0][1] == line["token_id"]  # greedy: the proxy's best
