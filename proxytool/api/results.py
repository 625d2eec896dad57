"""What the public API returns: a generation per prompt, and next-token scores for research use."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Generation:
    """One prompt's completion. ``str(generation)`` is its text.

    Attributes:
        text: the completion, special tokens dropped, cut where a stop string begins.
        token_ids: every generated token id (an ending EOS, or the token that completed a stop string,
            included).
        finish_reason: ``"stop"`` (an EOS or a stop string) or ``"length"`` (``max_new_tokens`` reached).
    """

    text: str
    token_ids: list[int]
    finish_reason: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class NextTokenScores:
    """The proxy's scores for the token after each prompt, and each role's own logits.

    Attributes:
        scores: ``base + Σ α (expert − anti)`` [prompts, vocab] in fp32 over the shared vocabulary
            (padded logits trimmed): exactly what generation picks from (greedy: its argmax).
        logits: each role's raw logits [prompts, width] by role name (``base``, ``expert``,
            ``anti-expert``; numbered with several pairs), trimmed to the same vocabulary where the roles
            share one tokenizer.
        tokenizer: the base's tokenizer (to turn ids into text).
    """

    scores: object  # torch.Tensor (torch is imported only when models load)
    logits: dict[str, object] = field(default_factory=dict)
    tokenizer: object = field(default=None, repr=False)

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per prompt, the ``k`` best next tokens as (text, score), best first."""
        best = self.scores.topk(min(k, self.scores.shape[-1]), dim=-1)
        return [
            [(self.tokenizer.decode([i]), round(v, 4)) for i, v in zip(ids, values)]
            for ids, values in zip(best.indices.tolist(), best.values.tolist())
        ]
