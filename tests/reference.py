"""The slow reference: every step recomputes every model on its whole sequence, no cache, no padding."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def encode(tokenizer, prompt, style):
    if style == "chat":
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


@torch.no_grad()
def reference_greedy(base, pairs, prompt, max_new_tokens, tokenizer, styles=None, eos_id=0):
    """Greedy proxy-tuned decoding by full recomputation.

    Args:
        base: a model; pairs: list of (alpha, expert_model, anti_model); styles: role -> chat/raw.
    """
    styles = styles or {}
    contexts = {"base": encode(tokenizer, prompt, styles.get("base", "raw"))}
    for i, _ in enumerate(pairs):
        contexts[f"e{i}"] = encode(tokenizer, prompt, styles.get("expert", "raw"))
        contexts[f"a{i}"] = encode(tokenizer, prompt, styles.get("anti-expert", "raw"))
    models = {"base": base}
    for i, (_, expert, anti) in enumerate(pairs):
        models[f"e{i}"], models[f"a{i}"] = expert, anti
    generated = []
    for _ in range(max_new_tokens):
        logits = {k: models[k](torch.tensor([contexts[k]])).logits[0, -1] for k in models}
        width = min([t.shape[-1] for t in logits.values()] + [len(tokenizer)])
        scores = logits["base"][:width].clone()
        for i, (alpha, _, _) in enumerate(pairs):
            scores += alpha * (logits[f"e{i}"][:width] - logits[f"a{i}"][:width])
        token = int(scores.argmax())
        generated.append(token)
        if token == eos_id:
            break
        for k in contexts:
            contexts[k] = contexts[k] + [token]
    return generated


def tokenizer_of(path):
    return AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def reference_scores(base, pairs, ids, tokenizer):
    """Proxy scores at every position of one token sequence, every model on the whole sequence."""
    logits = [base(torch.tensor([ids])).logits[0]]
    for _, expert, anti in pairs:
        logits += [expert(torch.tensor([ids])).logits[0], anti(torch.tensor([ids])).logits[0]]
    width = min([t.shape[-1] for t in logits] + [len(tokenizer)])
    scores = logits[0][:, :width].clone()
    for i, (alpha, _, _) in enumerate(pairs):
        scores += alpha * (logits[1 + 2 * i][:, :width] - logits[2 + 2 * i][:, :width])
    return scores
