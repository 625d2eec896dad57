"""Sources of next-token scores: the interface the Stepper talks to, and the local model behind it.

A :class:`Source` gives next-token log-scores for a batch of rows over a *candidate set*: a local
model scores its full vocabulary; a remote base (decoding/remote.py) scores its top-K (plus ids it
is asked for) and gives ``-inf`` elsewhere. What a remote base can do beyond that (score a guess in
the same call, take the pair's candidates, skip finished rows) is part of the interface, with
defaults that a local model keeps, so the Stepper never asks what concrete type it holds.

One loaded model runs as one or more row groups per forward.

A group is a way of running the model: ``None`` for the plain model, or a PEFT adapter name
(``"__base__"`` runs a PeftModel with its adapters off). Groups of one model run in a single batched
forward, so a LoRA expert and its anti-expert read the small model's weights once per step.

A source is immutable once loaded and may serve several generations at once: everything a
generation changes (KV cache, attention mask, positions) lives in the :class:`SourceState` that
``prefill`` returns and ``extend`` / ``truncate`` update.
"""

import inspect
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from proxytool.decoding.formats import Prompt, PromptFormat
from proxytool.errors import ProxyToolError


@dataclass(frozen=True)
class Group:
    """One way of running a source: a PEFT adapter name (None = plain model) and a prompt format."""

    adapter: str | None
    prompt_format: PromptFormat


def add_group(groups: list[Group], group: Group) -> int:
    """The index of ``group`` among a model's row groups, appended unless an equal one is there."""
    for i, existing in enumerate(groups):
        if existing.adapter == group.adapter and existing.prompt_format.same_as(group.prompt_format):
            return i
    groups.append(group)
    return len(groups) - 1


@dataclass
class SourceState:
    """One generation's state on one source: rows are ``groups × prompts``, left-padded."""

    cache: object
    mask: torch.Tensor  # [rows, length]
    last_position: torch.Tensor  # [rows, 1]: the position id of the last token fed
    capacity: int | None = None  # a static cache's fixed length (masks are padded to it); None: dynamic

    @property
    def length(self) -> int:
        return self.mask.shape[1]


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


@dataclass(frozen=True)
class Candidates:
    """What a partial source is asked to score at prefill besides its own set: per row, ``after``
    the prompt; and, with a guess of the pair (``guesses``), ``along`` it (one set per guessed token)."""

    after: list[set[int]] | None = None
    guesses: list[list[int]] | None = None
    along: list[list[set[int]]] | None = None


@dataclass(frozen=True)
class Standalone:
    """A role as a model of its own: its source and group, the tokenizer that decodes it, its EOS ids."""

    source: "Source"
    group: int
    tokenizer: object
    eos_ids: frozenset[int]


class Source(ABC):
    """Next-token scores for ``groups × prompts`` rows, over per-generation states.

    Immutable once built: ``prefill`` returns the generation's state; ``extend`` / ``truncate`` update it.
    """

    groups: tuple[Group, ...]
    device: torch.device
    local: bool = True  # computes in this process (False: waits on a server; a lane of its own)
    guess_length: int = 0  # tokens after a context it can score in the same call, when given a guess
    extra_top: int = 0  # how many of the pair's top candidates it can score besides its own set
    base_candidates: int = 0  # scores the base's top this-many tokens per position (runs after the base)

    @property
    def max_length(self) -> int | None:
        """The longest sequence it takes (prompt + generated), when known."""
        return None

    def encode(self, prompts: list[Prompt]) -> list[list[int]]:
        """Each group's token ids for each prompt (rows in ``groups × prompts`` order)."""
        return [g.prompt_format.encode(p) for g in self.groups for p in prompts]

    @abstractmethod
    def prefill(
        self,
        prompts: list[Prompt],
        all_positions: bool = False,
        *,
        candidates: Candidates | None = None,
        room: int | None = None,
    ) -> tuple[object, list[torch.Tensor]]:
        """Start a generation; returns its state and the scores per group ([prompts, vocab], or
        [prompts, length, vocab] at every position with ``all_positions``). ``room``: the most tokens
        that will follow the prompts (a static KV cache is sized by it)."""

    @abstractmethod
    def extend(
        self, state, tokens: torch.Tensor, candidates: list[list[set[int]]] | None = None, lazy: bool = False
    ) -> list[torch.Tensor]:
        """Append ``tokens`` [prompts, k] to every group; the scores after each [prompts, k, vocab].

        ``candidates[row][j]``: ids that join the candidate set after the j-th token (a partial
        source; a full-vocabulary source ignores them). ``lazy``: a source may leave columns after the
        first unscored rather than pay for them; :meth:`known` says how many hold scores."""

    @abstractmethod
    def truncate(self, state, drop: int) -> None:
        """Forget the last ``drop`` positions (tokens appended by ``extend`` that were not kept)."""

    def step(self, state, tokens: torch.Tensor, candidates: list[set[int]] | None = None) -> list[torch.Tensor]:
        """Append one token per prompt; scores per group [prompts, vocab]."""
        per_column = None if candidates is None else [[ids] for ids in candidates]
        return [t[:, -1] for t in self.extend(state, tokens.unsqueeze(-1), per_column)]

    def known(self, state, k: int) -> int:
        """How many of the last ``extend``'s ``k`` columns hold scores (fewer only after a lazy one)."""
        return k

    def retire(self, state, rows: set[int]) -> None:
        """Rows whose generation ended; a source may stop computing for them (their scores are then
        meaningless). A local model computes every row of its batch anyway."""
        return None

    def draft(self, state, tokens: torch.Tensor) -> list[list[int] | None]:
        """Per row, tokens that may follow ``tokens`` [prompts] whose scores cost nothing more (a remote
        base's greedy lookahead); None for a retired row (anything may follow)."""
        return [[] for _ in range(tokens.shape[0])]

    def standalone(self, group: int) -> "Standalone | None":
        """How the role in ``group`` runs as a model of its own, where that is not this source as it is
        (a pair member across tokenizers reads its own tokens); None: as it is."""
        return None

    def calls(self) -> tuple[int, int] | None:
        """(requests, retries) made so far by a source that calls a server; None for a local model."""
        return None

    def prefetch(self, state, tokens: torch.Tensor, guesses, candidates=None, rows=None) -> None:
        """Score the positions after ``tokens`` and along ``guesses`` ahead of need (``guess_length`` > 0)."""
        raise NotImplementedError(f"{type(self).__name__} takes no guesses")

    @property
    def joinable(self) -> bool:
        """Whether :meth:`join` and :meth:`drop` can merge and split its states between steps
        (continuous batching); a remote base or a pair across tokenizers cannot."""
        return False

    def join(self, state, other):
        """A new state holding ``state``'s prompts then ``other``'s, each row keeping its tokens, positions
        and KV entries (the states are not changed)."""
        raise ProxyToolError(f"{type(self).__name__} cannot merge generations")

    def drop(self, state, rows: set[int]):
        """A new state without the prompts ``rows`` (indices among the state's prompts)."""
        raise ProxyToolError(f"{type(self).__name__} cannot remove rows from a generation")


class ModelSource(Source):
    """A causal LM producing next-token logits for several row groups (its full vocabulary).

    ``kv_cache="static"``: generations get a fixed-size KV cache (transformers' StaticCache) and masks of
    one width, so each decode step has one shape (what CUDA graphs need); ``compiled`` runs the model
    through ``torch.compile`` (``reduce-overhead``: CUDA graphs on a GPU).
    """

    def __init__(self, model, groups: list[Group], pad_id: int = 0, kv_cache: str = "dynamic", compiled: bool = False):
        self.model = model
        self.groups = tuple(groups)
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.kv_cache = kv_cache
        self._forward_args = set(inspect.signature(_inner_model(model).forward).parameters)
        self._compiled_step = torch.compile(model, mode="reduce-overhead") if compiled else None
        self._adapter_rows = None  # hooks that put each group's rows on its adapter (models/lora_rows.py)
        has_adapters = any(g.adapter is not None for g in self.groups)
        if has_adapters and not compiled:
            from proxytool.models.lora_rows import RowGroupAdapters

            self._adapter_rows = RowGroupAdapters.fit(model, [g.adapter for g in self.groups])
        self._mixed_adapters = has_adapters and self._adapter_rows is None  # PEFT's mixed-adapter batch

    @property
    def max_length(self) -> int | None:
        """The longest sequence the model takes (prompt + generated), when its config says."""
        config = getattr(_inner_model(self.model), "config", None)
        getter = getattr(config, "get_text_config", None)
        config = getter() if getter is not None else config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def prefill(
        self,
        prompts: list[Prompt],
        all_positions: bool = False,
        *,
        candidates: Candidates | None = None,
        room: int | None = None,
    ) -> tuple[SourceState, list[torch.Tensor]]:
        """Run the prompts for every group; returns the new state and logits per group.

        Logits are ``[prompts, vocab]`` at the last position, or ``[prompts, length, vocab]`` at every
        (left-padded) position with ``all_positions``. A static cache needs ``room`` (else: dynamic).
        """
        ids, mask = left_pad(self.encode(prompts), self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache, StaticCache

        if self.kv_cache == "static" and room is not None:
            capacity = ids.shape[1] + room
            cache = StaticCache(config=_inner_model(self.model).config, max_cache_len=capacity)
            state = SourceState(cache, mask, positions[:, -1:], capacity)
        else:
            state = SourceState(DynamicCache(), mask, positions[:, -1:])
        logits = self._forward(state, ids, positions, keep=ids.shape[1] if all_positions else 1)
        return state, [t if all_positions else t[:, -1] for t in logits]

    def extend(
        self, state: SourceState, tokens: torch.Tensor, candidates=None, lazy: bool = False
    ) -> list[torch.Tensor]:
        """Append ``tokens`` [prompts, k] (the same tokens to every group); logits per group [prompts, k, vocab]."""
        ids = tokens.to(self.device).repeat(len(self.groups), 1)
        k = ids.shape[1]
        state.mask = torch.cat([state.mask, state.mask.new_ones((ids.shape[0], k))], dim=-1)
        positions = state.last_position + torch.arange(1, k + 1, device=self.device)
        state.last_position = positions[:, -1:]
        return self._forward(state, ids, positions, keep=k, step=True)

    @torch.inference_mode()
    def branch(self, state: SourceState, suffixes: list[list[int]]) -> list[torch.Tensor]:
        """Score several continuations of a one-prompt state at once, leaving the state as it was.

        Each suffix (non-empty) follows the state's tokens; returns per group the logits after each
        suffix position [suffixes, longest, vocab] (right-padded: positions past a suffix are junk).
        """
        import copy

        if state.capacity is not None:
            raise ProxyToolError("--kv-cache static cannot branch a generation (across tokenizers): use dynamic")
        n, width = len(suffixes), max(len(s) for s in suffixes)
        cache = copy.deepcopy(state.cache)
        cache.batch_repeat_interleave(n)  # rows: groups × suffixes
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        tail = torch.zeros((n, width), dtype=torch.long)
        for i, suffix in enumerate(suffixes):
            ids[i, : len(suffix)] = torch.tensor(suffix)
            tail[i, : len(suffix)] = 1
        groups = len(self.groups)
        ids, tail = ids.repeat(groups, 1).to(self.device), tail.repeat(groups, 1).to(self.device)
        mask = torch.cat([state.mask.repeat_interleave(n, dim=0), tail], dim=-1)
        positions = state.last_position.repeat_interleave(n, dim=0) + torch.arange(1, width + 1, device=self.device)
        return self._forward(SourceState(cache, mask, positions[:, -1:]), ids, positions, keep=width)

    @property
    def joinable(self) -> bool:
        return self.kv_cache == "dynamic"

    def join(self, state: SourceState, other: SourceState) -> SourceState:
        """Both states' rows in one: the shorter one is left-padded (mask 0, zero keys and values) to the
        longer's length, and each group's rows are ``state``'s prompts then ``other``'s."""
        width = max(state.length, other.length)
        n, m = self._prompts(state), self._prompts(other)
        groups = len(self.groups)  # rows of the concatenation: state's groups × n, then other's × m
        order = [
            i
            for g in range(groups)
            for i in [*range(g * n, g * n + n), *range(groups * n + g * m, groups * n + g * m + m)]
        ]
        order = torch.tensor(order, dtype=torch.long, device=state.mask.device)

        def both(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
            return torch.cat([_pad_left(a, width, dim), _pad_left(b, width, dim)]).index_select(0, order)

        layers = [
            (both(x.keys, y.keys, 2), both(x.values, y.values, 2))
            for x, y in zip(_dynamic_layers(state), _dynamic_layers(other), strict=True)
        ]
        from transformers import DynamicCache

        last = torch.cat([state.last_position, other.last_position]).index_select(0, order)
        return SourceState(DynamicCache(ddp_cache_data=layers), both(state.mask, other.mask, 1), last)

    def drop(self, state: SourceState, rows: set[int]) -> SourceState:
        """The state without prompts ``rows``; columns that only padding is left in are removed."""
        n = self._prompts(state)
        keep = [g * n + i for g in range(len(self.groups)) for i in range(n) if i not in rows]
        keep = torch.tensor(keep, dtype=torch.long, device=state.mask.device)
        mask = state.mask.index_select(0, keep)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else mask.shape[1]
        layers = [
            (x.keys.index_select(0, keep)[:, :, start:], x.values.index_select(0, keep)[:, :, start:])
            for x in _dynamic_layers(state)
        ]
        from transformers import DynamicCache

        return SourceState(
            DynamicCache(ddp_cache_data=layers), mask[:, start:], state.last_position.index_select(0, keep)
        )

    def _prompts(self, state: SourceState) -> int:
        return state.mask.shape[0] // len(self.groups)

    def truncate(self, state: SourceState, drop: int) -> None:
        """Forget the last ``drop`` positions (tokens appended by ``extend`` that were not kept)."""
        if drop <= 0:
            return
        if state.capacity is None:
            state.cache.crop(-drop)  # transformers 5: a negative count removes that many positions
        else:  # a static layer writes where its count says: step the count back (in place: fixed addresses)
            for layer in state.cache.layers:
                layer.cumulative_length.sub_(drop)
        state.mask = state.mask[:, :-drop]
        state.last_position = state.last_position - drop

    @torch.inference_mode()
    def _forward(
        self, state: SourceState, ids: torch.Tensor, positions: torch.Tensor, keep: int, step: bool = False
    ) -> list[torch.Tensor]:
        """One forward; decode ``step``s (one shape each) run compiled where asked, prompts eager."""
        mask = state.mask
        if state.capacity is not None:  # one mask width for every step: the static cache's
            if mask.shape[1] > state.capacity:
                raise ProxyToolError(f"the static KV cache holds {state.capacity} positions; this step needs more")
            mask = torch.nn.functional.pad(mask, (0, state.capacity - mask.shape[1]))
        kwargs = dict(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=state.cache,
            use_cache=True,
        )
        if "logits_to_keep" in self._forward_args:
            kwargs["logits_to_keep"] = keep
        per_group = ids.shape[0] // len(self.groups)
        adapter_rows = nullcontext()
        if self._adapter_rows is not None:  # each group's rows on its adapter, through PEFT's plain forward
            adapter_rows = self._adapter_rows.rows(per_group, ids.device)
        elif self._mixed_adapters:
            kwargs["adapter_names"] = [g.adapter or "__base__" for g in self.groups for _ in range(per_group)]
        compiled = self._compiled_step if step else None
        if compiled is not None:  # each call is a new CUDA-graph step; its outputs are overwritten by the next
            torch.compiler.cudagraph_mark_step_begin()
        with adapter_rows:
            out = (self.model if compiled is None else compiled)(**kwargs)
        state.cache = out.past_key_values
        logits = out.logits[:, -keep:, :]
        if compiled is not None:
            logits = logits.clone()
        return list(logits.view(len(self.groups), -1, keep, logits.shape[-1]).unbind(0))


def _dynamic_layers(state: SourceState) -> list:
    """The cache's layers, each holding keys and values [rows, heads, length, dim] over the whole mask
    (what :meth:`ModelSource.join` and ``drop`` can rearrange); else one line why not."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(state.cache, "layers", None)
    if state.capacity is not None or layers is None:
        raise ProxyToolError("only a dynamic KV cache can take or lose rows between steps (not --kv-cache static)")
    for layer in layers:
        if type(layer) is not DynamicLayer or layer.keys is None or layer.keys.shape[2] != state.length:
            raise ProxyToolError(
                f"this model's KV cache ({type(layer).__name__}) cannot take or lose rows between steps"
            )
    return layers


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``t`` with zeros before its entries along ``dim`` up to ``width``."""
    short = width - t.shape[dim]
    if short == 0:
        return t
    shape = list(t.shape)
    shape[dim] = short
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _inner_model(model):
    """The transformers model under a PeftModel (whose own forward takes **kwargs)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model
