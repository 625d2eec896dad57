"""A PeftModel's LoRA adapters on row groups of one batch, through PEFT's own single-adapter forward.

PEFT runs a batch that mixes adapters (``adapter_names=``) by hooking every LoRA layer for the call and
gathering and scattering each adapter's rows in every layer. On a CPU that cost a Qwen 0.5B decode step
(a rank-16 adapter on all seven projections: 168 layers) 30-57 ms over the same step with the adapter
simply on (docs/performance.md). Here the adapters the row groups ask for stay on, and each adapter's
LoRA input is zeroed on the rows of the other groups, by a hook put once on its ``lora_A`` layers: a
zeroed row adds ``B·A·0 = 0`` to the base layer's output (so it is exactly the base layer's), and an
adapter's own rows get PEFT's own ``base + B·A·x·scaling``.

Only plain LoRA on linear layers, unmerged, without a LoRA bias qualifies (a DoRA or other variant
changes the base output too); :meth:`RowGroupAdapters.fit` says None otherwise and the caller keeps
PEFT's mixed batch. The hooks do nothing outside :meth:`RowGroupAdapters.rows`.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


class RowGroupAdapters:
    """Zeroes each adapter's LoRA input on the rows of groups that do not use it, during ``rows``."""

    def __init__(self, layers: dict[str, list[torch.nn.Module]], adapters: Sequence[str | None]):
        # adapter -> bool [groups]: the row groups that run on it (``adapters``: per group, a name or None)
        self._groups_of = {a: torch.tensor([b == a for b in adapters]) for a in layers}
        self._keep: dict[str, torch.Tensor] = {}  # adapter -> bool [rows], set only inside ``rows``
        for adapter, lora_a_layers in layers.items():
            for lora_a in lora_a_layers:
                lora_a.register_forward_pre_hook(self._hook(adapter))

    @classmethod
    def fit(cls, model, adapters: Sequence[str | None]) -> "RowGroupAdapters | None":
        """Hooks for ``model`` (a PeftModel) whose groups use ``adapters`` (None or ``"__base__"``: the
        base model), or None where PEFT's mixed batch must run: the model's active adapters are not
        exactly the groups' adapters, or a layer is not plain, unmerged LoRA on a linear layer."""
        from peft import PeftModel
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer

        named = [None if a in (None, "__base__") else a for a in adapters]
        wanted = {a for a in named if a is not None}
        if not wanted or not isinstance(model, PeftModel) or set(model.active_adapters) != wanted:
            return None
        layers: dict[str, list[torch.nn.Module]] = {a: [] for a in wanted}
        for layer in model.modules():
            if not isinstance(layer, LoraLayer):
                continue
            used = [a for a in wanted if a in layer.lora_A or a in getattr(layer, "lora_embedding_A", {})]
            if not used:
                continue
            if not isinstance(layer, LoraLinear) or layer.merged or layer.disable_adapters:
                return None
            for a in used:
                if a in layer.lora_variant or layer.lora_B[a].bias is not None:
                    return None
                layers[a].append(layer.lora_A[a])
        return cls(layers, named)

    @contextmanager
    def rows(self, per_group: int, device: torch.device) -> Iterator[None]:
        """During the block, a forward's rows are ``groups × per_group`` (group-major), each group on its adapter."""
        for adapter, groups in self._groups_of.items():
            self._keep[adapter] = groups.to(device).repeat_interleave(per_group)
        try:
            yield
        finally:
            self._keep.clear()

    def _hook(self, adapter: str):
        def zero_other_rows(module, args):
            keep = self._keep.get(adapter)
            if keep is None:
                return None
            x = args[0]
            keep = keep.view(-1, *([1] * (x.dim() - 1)))
            return (torch.where(keep, x, 0.0), *args[1:])

        return zero_other_rows
