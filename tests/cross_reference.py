"""Cross-tokenizer proxy-tuning recomputed from its definition, slowly: every score from a fresh forward.

Independent of proxytool's cached path: no trunk, no KV cache, no prefix index, no window; the exact
way enumerates every split of the text and every pair token that writes on from it. Only what a token
writes (``TokenBytes.bytes_of``) and the canonical tokenization (``TokenBytes.encode``) are shared: they
are the definition, and tests/decoding/test_cross_tokenizer.py checks them on their own.
"""

import torch

from proxytool.decoding.token_bytes import TokenBytes


class ReferencePair:
    """One pair model after a fixed prompt: ``log p(s | text)`` for byte strings, by full recomputation."""

    def __init__(self, model, prompt_ids: list[int], vocab: TokenBytes):
        self.model, self.prompt, self.vocab = model, list(prompt_ids), vocab
        self._runs: dict[tuple[int, ...], tuple[float, torch.Tensor]] = {}

    def after(self, committed: list[int]) -> "ReferencePair":
        """The same model with ``committed`` tokens appended to its prompt."""
        return ReferencePair(self.model, self.prompt + list(committed), self.vocab) if committed else self

    @torch.no_grad()
    def run(self, seq: tuple[int, ...]) -> tuple[float, torch.Tensor]:
        """(log P(seq | prompt), the log-probs after it), each from one fresh forward (kept per sequence)."""
        if seq not in self._runs:
            logp = torch.log_softmax(self.model(torch.tensor([self.prompt + list(seq)])).logits[0].float(), -1)
            n = len(self.prompt)
            self._runs[seq] = (sum(float(logp[n - 1 + k, t]) for k, t in enumerate(seq)), logp[-1])
        return self._runs[seq]

    def prefix_logp(self, w: bytes) -> float:
        """log P(the text starts with w): every split j, canonical body, any token that writes w[j:] on."""
        if not w:
            return 0.0
        terms = []
        for j in range(len(w)):
            ids = [v for v, b in enumerate(self.vocab.bytes_of) if b and b.startswith(w[j:])]
            if ids:
                logp, after = self.run(self.vocab.encode(w[:j]))
                terms.append(logp + float(after[ids].logsumexp(0)))
        return float(torch.tensor(terms).logsumexp(0)) if terms else float("-inf")

    def score(self, text: bytes, s: bytes, mode: str) -> float:
        if mode == "exact":
            return self.prefix_logp(text + s) - self.prefix_logp(text)
        return self.run(self.vocab.encode(text + s))[0] - self.run(self.vocab.encode(text))[0]

    def special(self, text: bytes, pair_ids: list[int], mode: str) -> float:
        logp, after = self.run(self.vocab.encode(text))
        end = float(after[pair_ids].logsumexp(0))
        return logp + end - self.prefix_logp(text) if mode == "exact" else end


def pair_context(out: list[int], base_vocab: TokenBytes, pair_vocab: TokenBytes, specials) -> tuple[list, bytes]:
    """What the pair reads after the base wrote ``out``: (committed pair tokens, the text since the last
    special token the pair has a counterpart of)."""
    committed, text = [], b""
    for token in out:
        if base_vocab.bytes_of[token]:
            text += base_vocab.bytes_of[token]
        elif token in specials:
            committed += list(pair_vocab.encode(text)) + [specials[token][0]]
            text = b""
    return committed, text


def reference_scores(
    base, base_ids, out, expert, anti, base_vocab, specials, alpha, mode, top_k, eos=(0,), remote_top_k=None
):
    """The proxy scores over the base's vocabulary after ``base_ids + out`` (one prompt). ``remote_top_k``:
    the base as a server gives it, its top-K log-probabilities and -inf elsewhere."""
    with torch.no_grad():
        logits = base(torch.tensor([base_ids + out])).logits[0, -1].float()[: len(base_vocab.bytes_of)]
    if remote_top_k is not None:
        logp = torch.log_softmax(logits, -1)
        top = logp.topk(remote_top_k)
        logits = torch.full_like(logp, float("-inf")).index_put_((top.indices,), top.values)
    committed, text = pair_context(out, base_vocab, expert.vocab, specials)
    expert, anti = expert.after(committed), anti.after(committed)
    candidates = set(logits.topk(top_k).indices.tolist()) | set(eos)
    _, after = expert.run(expert.vocab.encode(text))
    for token in after.topk(5).indices.tolist():  # the pair's own next tokens: their base prefixes join
        written = expert.vocab.bytes_of[token]
        if written:
            candidates |= {v for v, b in enumerate(base_vocab.bytes_of) if b and written.startswith(b)}
    offset = torch.zeros_like(logits)
    for v in candidates:
        s = base_vocab.bytes_of[v]
        if s:
            offset[v] = expert.score(text, s, mode) - anti.score(text, s, mode)
        elif v in specials:
            offset[v] = expert.special(text, specials[v], mode) - anti.special(text, specials[v], mode)
    return logits + alpha * offset


def reference_greedy(base, base_ids, expert, anti, base_vocab, specials, alpha, mode, top_k, n, eos=(0,), **kwargs):
    out = []
    for _ in range(n):
        scores = reference_scores(
            base, base_ids, out, expert, anti, base_vocab, specials, alpha, mode, top_k, eos, **kwargs
        )
        out.append(int(scores.argmax()))
        if out[-1] in eos:
            break
    return out
