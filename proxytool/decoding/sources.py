"""Logit sources: one loaded model, its own KV cache, one or more row groups per forward.

A group is a way of running the model: ``None`` for the plain model, or a PEFT adapter name
(``"__base__"`` runs a PeftModel with its adapters off). Groups of one model run in a single batched
forward, so a LoRA expert and its anti-expert read the small model's weights once per step.
"""

import inspect
from dataclasses import dataclass

import torch

from proxytool.decoding.formats import Prompt, PromptFormat


@dataclass(frozen=True)
class Group:
    """One way of running a source: a PEFT adapter name (None = plain model) and a prompt format."""

    adapter: str | None
    prompt_format: PromptFormat


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows to one length; returns (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


class ModelSource:
    """A causal LM producing next-token logits for several row groups, with its own KV cache."""

    def __init__(self, model, groups: list[Group], pad_id: int = 0):
        self.model = model
        self.groups = list(groups)
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self._forward_args = set(inspect.signature(_inner_model(model).forward).parameters)
        self._cache = None
        self._mask = None
        self._positions = None

    def prefill(self, prompts: list[Prompt]) -> list[torch.Tensor]:
        """Encode the prompts for every group, run them; returns last-position logits per group."""
        rows = [g.prompt_format.encode(p) for g in self.groups for p in prompts]
        ids, mask = left_pad(rows, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        self._mask = mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self._positions = positions[:, -1:]
        from transformers import DynamicCache

        self._cache = DynamicCache()
        return self._forward(ids, positions)

    def step(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Append one token per row (the same token to every group) and return the new logits."""
        ids = tokens.to(self.device).repeat(len(self.groups)).unsqueeze(-1)
        self._mask = torch.cat([self._mask, self._mask.new_ones((ids.shape[0], 1))], dim=-1)
        self._positions = self._positions + 1
        return self._forward(ids, self._positions)

    def release(self) -> None:
        """Drop the KV cache (the model stays loaded)."""
        self._cache = self._mask = self._positions = None

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> list[torch.Tensor]:
        kwargs = dict(
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        )
        if "logits_to_keep" in self._forward_args:
            kwargs["logits_to_keep"] = 1
        if any(g.adapter is not None for g in self.groups):
            per_group = ids.shape[0] // len(self.groups)
            kwargs["adapter_names"] = [g.adapter or "__base__" for g in self.groups for _ in range(per_group)]
        out = self.model(**kwargs)
        self._cache = out.past_key_values
        logits = out.logits[:, -1, :]
        return list(logits.view(len(self.groups), -1, logits.shape[-1]).unbind(0))


def _inner_model(model):
    """The transformers model under a PeftModel (whose own forward takes **kwargs)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model
