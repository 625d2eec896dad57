from tiny import build_tokenizer


def test_tiny_tokenizer_round_trips_and_has_chat_template():
    tok = build_tokenizer()
    text = "Harris 48, Trump 47 in Pennsylvania."
    assert tok.decode(tok(text)["input_ids"]) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
