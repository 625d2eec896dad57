"""``ProxyLogitsProcessor``: proxy-tuning inside your own ``model.generate(..., logits_processor=[...])``.

The processor is a :class:`proxytool.decoding.stepper.Stepper` whose base is not a model but the scores
transformers hands it at each step (:class:`GivenScores`); the expert pair runs as the engine's own
sources with their KV caches, and ``Stepper.combine`` (the one home of the formula) adds the offset.
"""

import os
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from proxytool.decoding import checks
from proxytool.decoding.formats import Prompt, PromptFormat, TokenPrompt
from proxytool.decoding.roles import Member, ProxyModels
from proxytool.decoding.sources import Group, Source
from proxytool.errors import ProxyToolError


class GivenScores(Source):
    """A base source whose scores are given from outside (the base's own ``generate``): whatever
    ``current`` holds is its score at the last position. Private to one processor, never shared."""

    def __init__(self, device: torch.device):
        self.groups = (Group(None, PromptFormat(None)),)
        self.device = device
        self.current: torch.Tensor | None = None

    def prefill(self, prompts: list[Prompt], all_positions: bool = False, *, candidates=None, room=None):
        return None, [self.current]

    def extend(self, state, tokens: torch.Tensor, candidates=None, lazy: bool = False) -> list[torch.Tensor]:
        return [self.current.unsqueeze(1).expand(-1, tokens.shape[1], -1)]

    def truncate(self, state, drop: int) -> None:
        return None


class ProxyLogitsProcessor(LogitsProcessor):
    """Adds ``α (expert − anti_expert)`` to the base's scores at every step of transformers' ``generate``.

    The base is whatever model runs ``generate``; the pair must share its tokenizer (same ids). The pair
    keeps its own KV caches across the steps of one generation and starts over when ``input_ids`` do not
    extend the last ones (a new ``generate`` call, or beams reordered). Ids beyond the shared vocabulary
    (padded logit rows, e.g. Qwen's 151,936 for 151,665 tokens) get ``-inf``. Greedy decoding gives
    exactly ``ProxyTuned``'s greedy tokens for raw prompts; sampling applies transformers' temperature /
    top-k / top-p after this processor, on the combined scores, as proxytool does.

    In a batch, each row is left-padded: its leading ``pad_token_id`` tokens are dropped for the pair.

    Args:
        expert: a name (registry name, path, hub id) or a loaded model (a ``peft.PeftModel`` included).
        anti_expert: a name or a loaded model; None: the expert's recorded base (a name), or the PEFT
            expert's own base model with adapters off (sharing its weights).
        alpha: the steering weight.
        tokenizer: the shared tokenizer; needed with loaded models (for its size and pad id).
        pad_token_id: the id of left padding (default: the tokenizer's).
        dtype, device, **loading_options: how named models load (as :meth:`ProxyTuned.from_pretrained`).

    Example:
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer
        >>> model = AutoModelForCausalLM.from_pretrained(base)
        >>> tokenizer = AutoTokenizer.from_pretrained(base)
        >>> steer = ProxyLogitsProcessor(expert=expert, anti_expert=anti, alpha=1.0, device="cpu")
        >>> ids = tokenizer("Who leads the poll?", return_tensors="pt").input_ids
        >>> out = model.generate(ids, logits_processor=[steer], do_sample=False, max_new_tokens=5)
        >>> tuned = ProxyTuned.from_pretrained(base, expert=expert, anti_expert=anti, device="cpu")
        >>> out[0, ids.shape[1]:].tolist() == tuned.generate("Who leads the poll?", max_new_tokens=5).token_ids
        True
    """

    def __init__(
        self,
        expert,
        anti_expert=None,
        alpha: float = 1.0,
        *,
        tokenizer=None,
        pad_token_id: int | None = None,
        dtype: str = "auto",
        device: str = "auto",
        **loading_options,
    ):
        checks.alpha("alpha", alpha)
        self.alpha = float(alpha)
        pair = self._pair(expert, anti_expert, tokenizer, dtype, device, loading_options)
        self.tokenizer = pair.tokenizer
        self.pad_token_id = pad_token_id if pad_token_id is not None else self.tokenizer.pad_token_id
        device_of = pair.pairs[0].expert.source.device
        self._given = GivenScores(device_of)
        self.models = ProxyModels(
            base=Member(self._given, 0), pairs=pair.pairs, tokenizer=pair.tokenizer, eos_ids=pair.eos_ids
        )
        self._stepper = None
        self._seen: torch.Tensor | None = None

    def _pair(self, expert, anti_expert, tokenizer, dtype, device, loading_options) -> ProxyModels:
        """The loaded pair (its base member is not used: the base is the model running ``generate``)."""
        named = (str, os.PathLike)
        if isinstance(expert, named) and (anti_expert is None or isinstance(anti_expert, named)):
            from proxytool.api.tuned import ProxyTuned

            base = anti_expert if anti_expert is not None else _recorded_base(os.fspath(expert))
            options = {"dtype": dtype, "device": device, **loading_options}
            return ProxyTuned.from_pretrained(base, expert, anti_expert, self.alpha, **options).models
        if isinstance(expert, named) or isinstance(anti_expert, named):
            raise ProxyToolError("give expert and anti_expert both as names or both as loaded models")
        if tokenizer is None:
            raise ProxyToolError("a loaded expert needs tokenizer= (the tokenizer it shares with the base)")
        from proxytool.api.loaded import pair_models

        return pair_models(tokenizer, expert, anti_expert, self.alpha)

    def reset(self) -> None:
        """Forget the current sequence (the next call starts over; it also does so by itself)."""
        if self._stepper is not None:
            self._stepper.close()
        self._stepper, self._seen = None, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = input_ids.detach().to("cpu")
        self._given.current = scores.detach().to(self._given.device)
        seen = self._seen
        if seen is not None and ids.shape[0] == seen.shape[0] and ids.shape[1] > seen.shape[1]:
            if torch.equal(ids[:, : seen.shape[1]], seen):
                combined = self._stepper.extend(ids[:, seen.shape[1] :].to(self._given.device))[:, -1]
                self._seen = ids
                return self._full_width(combined, scores)
        self.reset()
        self._stepper = _stepper(self.models, self.alpha)
        combined = self._stepper.prefill([TokenPrompt(tuple(self._unpadded(row))) for row in ids.tolist()])
        self._seen = ids
        return self._full_width(combined, scores)

    def _unpadded(self, row: Sequence[int]) -> list[int]:
        start = 0
        while self.pad_token_id is not None and start < len(row) - 1 and row[start] == self.pad_token_id:
            start += 1
        return list(row[start:])

    @staticmethod
    def _full_width(combined: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The combined scores at the base's width: ids beyond the shared vocabulary get -inf."""
        out = torch.full_like(scores, float("-inf"))
        width = combined.shape[-1]
        out[:, :width] = combined.to(device=scores.device, dtype=scores.dtype)
        return out


def _stepper(models: ProxyModels, alpha: float):
    from proxytool.decoding.stepper import Stepper

    return Stepper(models, (alpha,))


def _recorded_base(expert: str) -> str:
    """The model an expert was tuned from (its default anti-expert), by name."""
    from proxytool.models.registry import resolve

    spec = resolve(expert)
    if spec.base is None:
        raise ProxyToolError(f"expert '{expert}' does not record the model it was tuned from; pass anti_expert")
    return spec.base.name
