"""Training data: validation names file:line:field; tokenization masks exactly what must be learned."""

import json

import pytest
from tiny import build_tokenizer

from proxytool.data.training import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    QA_PROMPT,
    ensure_chat_template,
    read_data,
    tokenize,
)
from proxytool.errors import ProxyToolError

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who leads?"},
        {"role": "assistant", "content": "Trump"},
        {"role": "user", "content": "By how much?"},
        {"role": "assistant", "content": "2 points"},
    ]
}


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def trained_text(tokenizer, row):
    """The trained-on tokens, decoded per contiguous span."""
    spans, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label == IGNORE_INDEX:
            if current:
                spans.append(tokenizer.decode(current))
                current = []
        else:
            assert label == token
            current.append(token)
    return spans + ([tokenizer.decode(current)] if current else [])


BAD = [
    (['{"text": "a"}', '{"text": "b"}', '{"text": "c",}'], 3, "invalid JSON"),
    (['{"text": "a"}', '["text"]'], 2, "expected a JSON object"),
    (['{"id": 1, "body": "a"}'], 1, "no training field"),
    ([{"text": "a", "messages": CHAT["messages"]}], 1, "field 'messages'"),
    ([{"prompt": "Q:", "completion": "A"}, {"prompt": "Q:"}], 2, "field 'completion': missing"),
    ([{"text": "a"}, {"text": 7}], 2, "field 'text': must be a string"),
    ([{"question": "q", "answer": "  "}], 1, "field 'answer': is empty"),
    (
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}],
        1,
        "field 'messages[1].role'",
    ),
    ([{"messages": [{"role": "user", "content": ["hi"]}]}], 1, "field 'messages[0].content'"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], 1, "no non-empty assistant turn"),
    ([{"messages": [{"role": "assistant", "content": "hi"}]}], 1, "field 'messages[0].role'"),
    ([{"messages": []}], 1, "field 'messages'"),
    ([CHAT, {"text": "doc"}, {"prompt": "Q:", "completion": "A"}], 3, "field 'prompt': this file mixes formats"),
    ([{"question": "q", "answer": "a"}, {"messages": CHAT["messages"]}], 2, "line 1 is 'question + answer'"),
]


@pytest.mark.parametrize("lines,line,message", BAD)
def test_bad_data_names_line_and_field(tmp_path, lines, line, message):
    path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(ProxyToolError) as err:
        read_data(path)
    text = str(err.value)
    assert text.startswith(f"{path}:{line}:"), text
    assert message in text
    assert "\n" not in text


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(ProxyToolError, match="no examples"):
        read_data(write_lines(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(ProxyToolError, match="no such data file"):
        read_data(tmp_path / "missing.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(ProxyToolError, match=r"latin.jsonl:1: not UTF-8"):
        read_data(tmp_path / "latin.jsonl")


def test_documents_may_accompany_chats(tmp_path):
    """`proxytool data polls` writes poll documents plus chat QA pairs into one train.jsonl."""
    data = read_data(write_lines(tmp_path / "t.jsonl", [{"text": "doc", "id": 1}, "", CHAT, {"text": "doc 2"}]))
    assert data.counts == {"text": 2, "messages": 1}
    assert data.prompt_format == "chat"
    assert [e.line for e in data.examples] == [1, 3, 4]
    assert read_data(write_lines(tmp_path / "p.jsonl", [{"prompt": "Q", "completion": "A"}])).prompt_format == "raw"


def test_question_answer_uses_the_gsm8k_eval_prompt(tmp_path):
    from proxytool.evaluation.tasks import gsm8k_exemplar

    question, answer = " Natalia sold 48 clips. How many? ", "48/2 = <<48/2=24>>24\n#### 72"
    data = read_data(write_lines(tmp_path / "g.jsonl", [{"question": question, "answer": answer}]))
    example = data.examples[0]
    assert example.prompt == QA_PROMPT.format(question=question.strip())
    assert example.prompt == "Question: Natalia sold 48 clips. How many?\nAnswer:"
    assert example.completion == " 48/2 = 24\nThe answer is 72."  # the few-shot style, no <<calc>>
    assert gsm8k_exemplar(question, answer) == example.prompt + example.completion + "\n\n"


def test_prompt_completion_trains_on_completion_and_eos(tmp_path):
    tokenizer = build_tokenizer()
    data = read_data(
        write_lines(tmp_path / "p.jsonl", [{"prompt": "Who leads?", "completion": " Trump"}, {"text": "Hello"}])
    )
    prompt_row, text_row = tokenize(data, tokenizer)
    assert trained_text(tokenizer, prompt_row) == [" Trump<|endoftext|>"]
    assert tokenizer.decode(prompt_row["input_ids"]) == "Who leads? Trump<|endoftext|>"
    assert text_row["labels"] == text_row["input_ids"]
    assert text_row["input_ids"][-1] == tokenizer.eos_token_id


def test_chat_trains_on_assistant_turns_only(tmp_path):
    tokenizer = build_tokenizer()
    data = read_data(write_lines(tmp_path / "c.jsonl", [CHAT]))
    (row,) = tokenize(data, tokenizer)
    assert trained_text(tokenizer, row) == ["Trump<|im_end|>\n", "2 points<|im_end|>\n"]
    assert tokenizer.decode(row["input_ids"]) == tokenizer.apply_chat_template(CHAT["messages"], tokenize=False)


def test_default_chat_template_for_tokenizers_without_one(tmp_path):
    tokenizer = build_tokenizer(chat=False)
    assert ensure_chat_template(tokenizer) is True
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    assert ensure_chat_template(tokenizer) is False
    (row,) = tokenize(read_data(write_lines(tmp_path / "c.jsonl", [CHAT])), tokenizer)
    assert tokenizer.decode(row["input_ids"]) == (
        "Be brief.\n\nUser: Who leads?\nAssistant: Trump<|endoftext|>\n"
        "User: By how much?\nAssistant: 2 points<|endoftext|>\n"
    )
    assert trained_text(tokenizer, row) == [" Trump<|endoftext|>\n", " 2 points<|endoftext|>\n"]
    prompt = tokenizer.apply_chat_template(CHAT["messages"][:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "Be brief.\n\nUser: Who leads?\nAssistant:"


def test_a_failing_chat_template_names_the_line(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    data = read_data(write_lines(tmp_path / "c.jsonl", [{"text": "doc"}, CHAT]))
    with pytest.raises(ProxyToolError, match=r"c.jsonl:2: field 'messages': the chat template failed: roles"):
        tokenize(data, tokenizer)


def test_prompts_files_may_be_gzipped(tmp_path):
    import gzip

    from proxytool.data.prompts import read_prompts

    lines = '{"id": "a", "prompt": "Hello"}\n{"id": "b", "messages": [{"role": "user", "content": "Hi"}]}\n'
    (tmp_path / "p.jsonl").write_text(lines)
    (tmp_path / "p.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    assert read_prompts(str(tmp_path / "p.jsonl.gz")) == read_prompts(str(tmp_path / "p.jsonl"))
