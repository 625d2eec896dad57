"""`proxytool chat` driven by a script through stdin, and the ChatSession it runs."""

from cli_runner import run_cli
from engine_helpers import setup

from proxytool.decoding.generate import complete, settled_text
from proxytool.decoding.session import ChatSession


def test_piped_chat_replies_a_line_per_message_and_obeys_commands(tiny_models):
    script = "Hello\n/alpha 0.5\nWho leads the poll?\n/reset\n/bogus\n\nHi again\n/exit\nnever read\n"
    code, out, err = run_cli(
        "chat",
        "--base",
        tiny_models["base"],
        "--expert",
        tiny_models["expert"],
        "--anti-expert",
        tiny_models["anti"],
        "--max-new-tokens",
        "5",
        "--system",
        "Be brief.",
        "--temperature",
        "0",
        "--top-p",
        "1",
        "--top-k",
        "0",
        "--seed",
        "1",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--quantize-base",
        "none",
        "--base-format",
        "raw",
        "--expert-format",
        "chat",
        "--anti-expert-format",
        "chat",
        "--share-weights",
        "--threads",
        "1",
        "--alpha",
        "1.0",
        "--overlap",
        "off",
        stdin=script,
    )
    assert code == 0, err
    assert len(out.splitlines()) == 3
    assert "(alpha = 0.5)" in err and "(conversation reset)" in err and "unknown command /bogus" in err


def test_session_streams_the_full_reply_and_keeps_history(tiny_models):
    models = setup(tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])])
    session = ChatSession(models, max_new_tokens=8, stop=())
    streamed = "".join(session.reply("Hello"))
    [direct] = complete(models, [[{"role": "user", "content": "Hello"}]], max_new_tokens=8, row_seeds=[0])
    assert streamed == direct.text
    assert session.history == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": direct.text.strip()},
    ]
    session.set_alpha(0.0)
    assert session.alphas == (0.0,) and all(p.alpha == 1.0 for p in models.pairs)  # the loaded models are untouched
    prompt = session.messages("Again")
    [base_alone] = complete(models.with_base(models.base), [prompt], max_new_tokens=8, row_seeds=[1])
    assert "".join(session.reply("Again")) == base_alone.text  # alpha 0 is the base alone
    session.reset()
    assert session.history == []


def test_text_that_may_start_a_stop_string_is_held_back():
    assert settled_text("Sure.\nUs", ("\nUser:",)) == "Sure."
    assert settled_text("Sure.\ufffd", ()) == "Sure."
    assert settled_text("Sure. U", ("\nUser:",)) == "Sure. U"
