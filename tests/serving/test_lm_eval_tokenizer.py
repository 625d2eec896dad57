"""lm-eval's own remote-tokenizer code against the server (runs where lm-eval is importable; lm-eval 0.4.13:
``check_remote_tokenizer_support`` is what its default ``tokenizer_backend=auto`` asks before choosing
the server's tokenizer, ``RemoteTokenizer`` what it then tokenizes with)."""

import pytest

lm_eval_utils = pytest.importorskip("lm_eval.utils")


@pytest.mark.skipif(not hasattr(lm_eval_utils, "RemoteTokenizer"), reason="lm-eval before 0.4.13")
def test_lm_eval_finds_and_uses_the_server_tokenizer(server, proxy_models):
    tok = proxy_models.tokenizer
    base_url = server.url + "/v1/completions"
    assert lm_eval_utils.check_remote_tokenizer_support(base_url)
    remote = lm_eval_utils.RemoteTokenizer(base_url, 30, True, None, None)
    text = "Who leads the national poll?"
    assert remote.encode(text) == tok(text, add_special_tokens=False)["input_ids"]
    assert remote.decode(remote.encode(text)) == tok.decode(tok(text, add_special_tokens=False)["input_ids"])
    assert remote.eos_token == tok.eos_token and remote.eos_token_id == tok.eos_token_id
    assert remote.apply_chat_template([{"role": "user", "content": "Hi"}]) == tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
