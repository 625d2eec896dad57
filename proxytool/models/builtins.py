"""Built-in model aliases: name -> hub id and prompt format. Data, not code."""


def _family(
    prefix: str, hub: str, sizes: list[str], base_suffix: str, chat_suffix: str | None, chat_name: str = "instruct"
) -> dict[str, dict]:
    entries = {}
    for size in sizes:
        entries[f"{prefix}-{size.lower()}"] = {"source": f"{hub}-{size}{base_suffix}", "prompt_format": "raw"}
        if chat_suffix is not None:
            entries[f"{prefix}-{size.lower()}-{chat_name}"] = {
                "source": f"{hub}-{size}{chat_suffix}",
                "prompt_format": "chat",
                "base": f"{prefix}-{size.lower()}",
            }
    return entries


BUILTIN_MODELS: dict[str, dict] = {
    "gpt2": {"source": "openai-community/gpt2", "prompt_format": "raw"},
    "gpt2-medium": {"source": "openai-community/gpt2-medium", "prompt_format": "raw"},
    "gpt2-large": {"source": "openai-community/gpt2-large", "prompt_format": "raw"},
    "gpt2-xl": {"source": "openai-community/gpt2-xl", "prompt_format": "raw"},
    "distilgpt2": {"source": "distilbert/distilgpt2", "prompt_format": "raw"},
    **_family("llama-2", "meta-llama/Llama-2", ["7b", "13b", "70b"], "-hf", "-chat-hf", chat_name="chat"),
    **_family("qwen2.5", "Qwen/Qwen2.5", ["0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B"], "", "-Instruct"),
    **_family("qwen2.5-coder", "Qwen/Qwen2.5-Coder", ["0.5B", "1.5B", "3B", "7B", "14B", "32B"], "", "-Instruct"),
    **_family("smollm2", "HuggingFaceTB/SmolLM2", ["135M", "360M", "1.7B"], "", "-Instruct"),
}
