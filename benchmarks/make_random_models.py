"""Random-weight Qwen2.5-shaped models for timing where no real weights can be fetched (e.g. a GPU box).

Timings depend on shapes, not on weight values, so a random 7B base with a random 0.5B pair and a
random LoRA adapter measures what the real models would. Usage:

    python benchmarks/make_random_models.py --tokenizer DIR --out DIR [--base 7b] [--small 0.5b] [--device cuda]
    python benchmarks/make_random_models.py --lora-only --small MODEL_DIR --out DIR

writes DIR/base, DIR/small and DIR/lora (an adapter on DIR/small), each with the tokenizer.
With --lora-only --small FOLDER, writes just an adapter on an existing model into DIR.
"""

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

SHAPES = {  # Qwen2.5 configs: hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings
    "0.5b": (896, 4864, 24, 14, 2, 151936, True),
    "1.5b": (1536, 8960, 28, 12, 2, 151936, True),
    "7b": (3584, 18944, 28, 28, 4, 152064, False),
    "14b": (5120, 13824, 48, 40, 8, 152064, False),
    "tiny": (64, 128, 2, 4, 2, None, True),  # a CPU smoke run of the GPU scripts (vocab: the tokenizer's)
}
LORA_B_STD = 0.002  # the adapter's B matrices: small enough that the expert still writes text, large enough to steer


def make_model(size: str, out: Path, tokenizer_dir: Path, device: str, dtype) -> Path:
    hidden, inter, layers, heads, kv, vocab, tied = SHAPES[size]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = vocab or len(tokenizer)
    config = Qwen2Config(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=32768,
        bos_token_id=_first(tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=_first(tokenizer.pad_token_id, tokenizer.eos_token_id),
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _first(*ids):
    return next(i for i in ids if i is not None)


def make_lora(small: Path, out: Path, device: str, dtype, r: int = 16, lora_b_std: float = LORA_B_STD) -> Path:
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(small, dtype=dtype, device_map={"": device})
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights="gaussian")
    )
    for name, weight in peft_model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero (a no-op adapter): the expert would equal the anti-expert
            torch.nn.init.normal_(weight, std=lora_b_std)
    peft_model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (small / name).exists():
            shutil.copy(small / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder (not needed with --lora-only)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="7b", choices=sorted(SHAPES))
    parser.add_argument("--small", default="0.5b", help=f"a size ({', '.join(SHAPES)}) or, with --lora-only, a folder")
    parser.add_argument("--lora-only", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    if not args.lora_only and args.tokenizer is None:
        parser.error("--tokenizer is required (unless --lora-only)")
    dtype = getattr(torch, args.dtype)
    if args.lora_only:
        make_lora(Path(args.small), args.out, args.device, dtype)
        print(f"wrote {args.out} (LoRA on {args.small})")
        return
    make_model(args.base, args.out / "base", args.tokenizer, args.device, dtype)
    make_model(args.small, args.out / "small", args.tokenizer, args.device, dtype)
    make_lora(args.out / "small", args.out / "lora", args.device, dtype)
    print(f"wrote {args.out}/base ({args.base}), small ({args.small}), lora")


if __name__ == "__main__":
    main()
