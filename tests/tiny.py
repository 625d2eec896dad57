"""Tiny models and a tiny tokenizer built in-process: the tests never download anything."""

from pathlib import Path

CORPUS = [
    "The poll of likely voters in Pennsylvania shows Harris 48 and Trump 47.",
    "Who leads the national poll? Trump leads by two points among registered voters.",
    "A sample of 1,200 adults was interviewed between October 1 and October 5.",
    "Janet has 3 apples and buys 5 more; how many apples does she have? 8.",
    "def add(a, b):\n    return a + b\n",
    "Hello! How can I help you today? The answer is 42.",
    "Margin of error plus or minus three points; Wisconsin, Michigan, Arizona, Georgia, Nevada.",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


OTHER_CORPUS = [line.upper() if i % 2 else line[::-1] for i, line in enumerate(CORPUS)] + CORPUS[::2]


def build_tokenizer(vocab_size: int = 320, chat: bool = True, corpus: list[str] = CORPUS):
    """A byte-level BPE tokenizer trained on a fixed corpus (deterministic, ~0.1 s); another corpus or
    size gives other merges and ids (a pair that does not share the base's tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(arch: str = "llama", vocab_size: int = 320, seed: int = 0, layers: int = 2, hidden: int = 32):
    """A randomly initialised causal LM of a given architecture ("llama", "gpt2", "qwen2")."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=3)
    if arch == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=2, n_positions=256, **common)
    elif arch == "qwen2":
        config = Qwen2Config(
            num_hidden_layers=layers,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **common,
        )
    else:
        config = LlamaConfig(
            num_hidden_layers=layers,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # sharpen the random logits so greedy decoding has clear winners
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


def save_model(
    path: Path,
    arch: str = "llama",
    seed: int = 0,
    vocab_size: int | None = None,
    chat: bool = True,
    tokenizer=None,
    **kwargs,
) -> Path:
    """Save a tiny model plus tokenizer under ``path``; ``vocab_size`` may pad beyond the tokenizer."""
    tokenizer = tokenizer or build_tokenizer(chat=chat)
    model = build_model(arch, vocab_size=vocab_size or len(tokenizer), seed=seed, **kwargs)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_adapter(path: Path, base_path: Path, seed: int = 0, r: int = 4) -> Path:
    """A random (non-zero) LoRA adapter on the tiny model at ``base_path``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path
