"""Cross-tokenizer proxy-tuning: steer a base whose tokenizer the expert pair does not share.

The sampling space stays the base's tokens. At each position the Stepper hands this source the base's
top-K candidates; this source adds the base tokens that write a prefix of what the pair itself would
write next, and scores every candidate string ``s`` with each pair model: ``log p(s | text so far)``
over bytes, where the text so far is what the base has written. Then the one formula applies:
``base(v) + Σ α (expert(s_v) − anti(s_v))``; tokens outside the candidate set get no offset (both
sides the same), so α = 0 and expert == anti give the base's own distribution exactly.

Two ways to get ``log p(s | x)`` from a model over its own tokens (docs/cross_tokenizer.md):

- ``exact``: ``P(x·s) / P(x)`` with ``P(w)`` the probability that the model's text starts with ``w``,
  summed over every covering token sequence whose body (all tokens but the last) is the model's
  canonical tokenization of its text: ``Σ_j P(canon(w[:j])) · Σ_{v writes w[j:]…} p(v | canon(w[:j]))``
  (ByteSampler's construction, with the last token free). Prefixes that end inside a token count.
- ``fast``: one path each: ``log P(canon(x·s)) − log P(canon(x))``.

The base's EOS scores the pair's EOS after the text. The pair keeps a trunk of tokens (the common
prefix of everything scored) with its KV cache, so each position runs only the few tokens past it.
"""

from dataclasses import dataclass, field

import torch

from proxytool.decoding.config import CROSS_MODES
from proxytool.decoding.formats import Prompt
from proxytool.decoding.sources import Candidates, Group, ModelSource, Source, Standalone
from proxytool.decoding.token_bytes import TokenBytes
from proxytool.errors import ProxyToolError

SUGGESTED = 5  # the pair's top next tokens whose base prefixes join the candidates
UNSCORED = -1e9  # every member's score outside the candidates: no offset (equal on both sides), last in a trace


@dataclass
class _Trunk:
    """One prompt on one pair model: KV over prompt + ``tokens``, and the log-probs after each prefix of
    ``tokens`` ([groups, vocab] each; ``logprobs[k]`` follows ``tokens[:k]``)."""

    state: object
    tokens: list[int]
    logprobs: list[torch.Tensor]


@dataclass(frozen=True)
class _Context:
    """What the pair reads after the prompt: ``committed`` pair tokens (the text before the base's last
    special token, and that token), then the bytes the base wrote since."""

    committed: tuple[int, ...] = ()
    text: bytes = b""


@dataclass
class CrossState:
    """Per prompt: the pair's context, the contexts before each appended token (to truncate), the trunks."""

    contexts: list[_Context]
    history: list[list[_Context]]
    trunks: list[dict[int, _Trunk]]  # by id(pair source)
    retired: set[int] = field(default_factory=set)


class CrossTokenizerSource(Source):
    """The expert pairs' scores of the base's candidate tokens, one group per pair member.

    ``members``: (pair source, its group) per role, in the order of this source's groups.
    """

    def __init__(
        self,
        members: list[tuple[ModelSource, int]],
        pair_vocab: TokenBytes,
        base_vocab: TokenBytes,
        pair_eos: frozenset[int],
        base_eos: frozenset[int],
        *,
        mode: str,
        top_k: int,
    ):
        if mode not in ("fast", "exact"):
            raise ProxyToolError(f"--cross-tokenizer must be one of {', '.join(CROSS_MODES)} (got '{mode}')")
        self.members = members
        self.pair_sources = list({id(s): s for s, _ in members}.values())
        self.groups = tuple(Group(s.groups[g].adapter, s.groups[g].prompt_format) for s, g in members)
        self.pair_vocab, self.base_vocab = pair_vocab, base_vocab
        self.specials = _special_map(base_vocab, pair_vocab, frozenset(base_eos), frozenset(pair_eos))
        self.pair_eos = frozenset(pair_eos)
        self.mode = mode
        self.base_candidates = top_k
        self.device = torch.device("cpu")

    @classmethod
    def between(cls, members, base_tokenizer, pair_tokenizer, pair_eos, base_eos, *, mode: str, top_k: int):
        """The source for pair members of ``pair_tokenizer`` steering a base of ``base_tokenizer``."""
        pair_vocab = TokenBytes(pair_tokenizer, "the pair's tokenizer")
        base_vocab = TokenBytes(base_tokenizer, "the base's tokenizer")
        return cls(members, pair_vocab, base_vocab, frozenset(pair_eos), frozenset(base_eos), mode=mode, top_k=top_k)

    @property
    def max_length(self) -> int | None:
        limits = [s.max_length for s in self.pair_sources if s.max_length]
        return min(limits) if limits else None

    def encode(self, prompts: list[Prompt]) -> list[list[int]]:
        return [g.prompt_format.encode(p) for g in self.groups for p in prompts]

    def prefill(
        self,
        prompts: list[Prompt],
        all_positions: bool = False,
        *,
        candidates: Candidates | None = None,
        room: int | None = None,
    ) -> tuple[CrossState, list[torch.Tensor]]:
        if all_positions:
            raise ProxyToolError("scoring prompt positions is not supported across tokenizers")
        state = CrossState([_Context() for _ in prompts], [[] for _ in prompts], [])
        for prompt in prompts:
            trunks = {}
            for source in self.pair_sources:
                source_state, logits = source.prefill([prompt])
                trunks[id(source)] = _Trunk(source_state, [], [_log_softmax(torch.stack([t[0] for t in logits]))])
            state.trunks.append(trunks)
        after = candidates.after if candidates is not None else None
        return state, self._scores(state, after)

    def extend(
        self, state: CrossState, tokens: torch.Tensor, candidates=None, lazy: bool = False
    ) -> list[torch.Tensor]:
        """Append base ``tokens`` [prompts, k]; the members' scores after each [prompts, k, base vocab].
        ``candidates[row][j]``: the base's candidates after the j-th token (None or missing: not scored)."""
        columns = []
        for j in range(tokens.shape[1]):
            for row, token in enumerate(tokens[:, j].tolist()):
                state.history[row].append(state.contexts[row])
                state.contexts[row] = self._after(state.contexts[row], token)
            wanted = None if candidates is None else [row[j] if j < len(row) else None for row in candidates]
            columns.append(self._scores(state, wanted))
        if not columns:
            return [torch.full((len(state.contexts), 0, len(self.base_vocab.bytes_of)), UNSCORED) for _ in self.groups]
        return [torch.stack([c[m] for c in columns], dim=1) for m in range(len(self.groups))]

    def truncate(self, state: CrossState, drop: int) -> None:
        for row, history in enumerate(state.history):
            for _ in range(drop):
                state.contexts[row] = history.pop()

    def retire(self, state: CrossState, rows: set[int]) -> None:
        state.retired |= set(rows)

    def _scores(self, state: CrossState, wanted: list[set[int] | None] | None) -> list[torch.Tensor]:
        """Per member [prompts, base vocab]: log p(s_v | text) on each row's candidates, UNSCORED elsewhere."""
        out = torch.full((len(self.groups), len(state.contexts), len(self.base_vocab.bytes_of)), UNSCORED)
        for row in range(len(state.contexts)):
            if wanted is None or wanted[row] is None or row in state.retired:
                continue
            ids, values = self.row_scores(state.trunks[row], state.contexts[row], wanted[row])
            if ids:
                out[:, row, ids] = values
        return list(out.unbind(0))

    def standalone(self, group: int) -> Standalone:
        """A pair member alone decodes its own tokens with its own tokenizer (eval's expert system)."""
        source, inner = self.members[group]
        return Standalone(source, inner, self.pair_vocab.tokenizer, self.pair_eos)

    def _after(self, context: _Context, token: int) -> _Context:
        """The pair's context once the base wrote ``token``: its bytes, or the pair's own special token."""
        written = self.base_vocab.bytes_of[token]
        if written:
            return _Context(context.committed, context.text + written)
        if token in self.specials:
            committed = context.committed + self.pair_vocab.encode(context.text) + (self.specials[token][0],)
            return _Context(committed)
        return context  # a special token the pair has no counterpart of: it reads nothing

    def row_scores(
        self, trunks: dict[int, _Trunk], context: _Context, wanted: set[int]
    ) -> tuple[list[int], torch.Tensor]:
        """The candidates (``wanted`` + the pair's suggestions) and their scores [members, candidates]."""
        canon = _Canon(self.pair_vocab, context.committed)
        here = canon(context.text)
        first = self._evaluate(trunks, [here], grow=False)
        candidates = sorted(set(wanted) | self._suggested(first[here][1]))
        strings = {v: self.base_vocab.bytes_of[v] for v in candidates}
        scorer = _exact_scores if self.mode == "exact" else _fast_scores
        return scorer(self, trunks, canon, context.text, strings)

    def _suggested(self, after: torch.Tensor) -> set[int]:
        """Base tokens that write a prefix of one of the pair's top next tokens (the first member's view)."""
        top = after[0].topk(min(SUGGESTED, after.shape[-1])).indices.tolist()
        suggested = set()
        for token in top:
            written = self.pair_vocab.bytes_of[token]
            if written:
                suggested.update(self.base_vocab.prefixes_of(written))
        return suggested

    def _evaluate(self, trunks: dict[int, _Trunk], seqs: list[tuple[int, ...]], grow: bool = True) -> dict:
        """For each pair-token sequence (after the prompt): its log-probability past the common trunk and
        the log-probs after it, per member: ``{seq: ([members], [members, vocab])}``. The trunk moves
        to the sequences' common prefix (cropped, and extended if ``grow``), so each call runs only what
        lies past it."""
        per_source = {id(s): _run(s, trunks[id(s)], seqs, grow) for s in self.pair_sources}
        out = {}
        for seq in seqs:
            logp = torch.stack([per_source[id(s)][seq][0][g] for s, g in self.members])
            after = torch.stack([per_source[id(s)][seq][1][g] for s, g in self.members])
            out[seq] = (logp, after)
        return out

    def special_logprob(self, base_id: int, after: torch.Tensor) -> torch.Tensor:
        """log p(the pair writes this special token here) per member, from the log-probs after the text."""
        return after[:, self.specials[base_id]].logsumexp(-1)


def _special_map(base_vocab: TokenBytes, pair_vocab: TokenBytes, base_eos, pair_eos) -> dict[int, list[int]]:
    """Base special tokens the pair can score: the base's EOS by the pair's EOS, others by the pair's
    special token of the same text (e.g. ``<|im_end|>``); the rest get no offset."""
    by_text = {}
    for i, text in pair_vocab.special_text.items():
        by_text.setdefault(text, set()).add(i)
    out = {}
    for i, text in base_vocab.special_text.items():
        ids = set(by_text.get(text, ())) | (set(pair_eos) if i in base_eos else set())
        if ids:
            out[i] = sorted(ids)
    for i in base_eos:
        out.setdefault(i, sorted(pair_eos))
    return {i: ids for i, ids in out.items() if ids}


class _Canon:
    """The pair tokens of a context: its committed tokens, then the canonical tokenization of the text."""

    def __init__(self, vocab: TokenBytes, committed: tuple[int, ...]):
        self.vocab, self.committed = vocab, committed

    def __call__(self, text: bytes) -> tuple[int, ...]:
        return self.committed + self.vocab.encode(text)


def _fast_scores(source, trunks, canon: _Canon, text: bytes, strings):
    """``log P(canon(x·s)) − log P(canon(x))``, one path each; the base's EOS: the pair's EOS after x."""
    here = canon(text)
    paths = {v: canon(text + s) for v, s in strings.items() if s}
    scored = source._evaluate(trunks, [here, *paths.values()])
    base_logp, after = scored[here]
    ids, values = [], []
    for v, s in strings.items():
        if s:
            values.append(scored[paths[v]][0] - base_logp)
        elif v in source.specials:
            values.append(source.special_logprob(v, after))
        else:
            continue  # a special token the pair has no counterpart of: no offset
        ids.append(v)
    return ids, torch.stack(values, dim=1) if values else torch.zeros(len(source.groups), 0)


def _exact_scores(source, trunks, canon: _Canon, text: bytes, strings):
    """``log P(x·s) − log P(x)`` with P summed over covering sequences with canonical bodies."""
    vocab = source.pair_vocab
    here = canon(text)
    texts = [text] + [text + s for s in strings.values() if s]
    bodies = {w: _bodies(canon, w) for w in texts}
    seqs = list(dict.fromkeys([here] + [seq for spans in bodies.values() for _, seq in spans]))
    scored = source._evaluate(trunks, seqs)

    def prefix_logp(w: bytes) -> torch.Tensor:
        if not w:
            return torch.zeros(len(source.groups))
        terms = [
            scored[seq][0] + scored[seq][1][:, list(vocab.with_prefix(w[j:]))].logsumexp(-1) for j, seq in bodies[w]
        ]
        return torch.stack(terms).logsumexp(0)

    norm = prefix_logp(text)
    ids, values = [], []
    for v, s in strings.items():
        if s:
            values.append(prefix_logp(text + s) - norm)
        elif v in source.specials:
            logp, after = scored[here]
            values.append(logp + source.special_logprob(v, after) - norm)
        else:
            continue
        ids.append(v)
    return ids, torch.stack(values, dim=1) if values else torch.zeros(len(source.groups), 0)


def _bodies(canon: _Canon, w: bytes) -> list[tuple[int, tuple[int, ...]]]:
    """(j, canon(w[:j])) for every split j where some token writes a continuation of ``w[j:]``."""
    start = max(0, len(w) - canon.vocab.max_len)
    return [(j, canon(w[:j])) for j in range(start, len(w)) if canon.vocab.with_prefix(w[j:])]


def _run(source: ModelSource, trunk: _Trunk, seqs: list[tuple[int, ...]], grow: bool) -> dict:
    """One pair model over the sequences: ``{seq: ([groups] log-prob past the trunk, [groups, vocab] after)}``."""
    common = _common_prefix(seqs)
    keep = len(_common_prefix([tuple(trunk.tokens), common]))
    if keep < len(trunk.tokens):  # the text changed under the trunk (a truncation, a re-merge): crop it
        source.truncate(trunk.state, len(trunk.tokens) - keep)
        del trunk.tokens[keep:], trunk.logprobs[keep + 1 :]
    if grow and len(common) > keep:  # grow the trunk to the common prefix (each token joins it once)
        grown = common[keep:]
        logits = source.extend(trunk.state, torch.tensor([grown]))
        steps = _log_softmax(torch.stack([t[0] for t in logits]))  # [groups, k, vocab]
        trunk.tokens.extend(grown)
        trunk.logprobs.extend(steps.unbind(1))
    base = len(trunk.tokens)
    out = {}
    longer = [seq for seq in seqs if len(seq) > base]
    if longer:
        logits = source.branch(trunk.state, [list(seq[base:]) for seq in longer])
        steps = _log_softmax(torch.stack(logits))  # [groups, rows, width, vocab]
        for i, seq in enumerate(longer):
            suffix = seq[base:]
            before = torch.cat([trunk.logprobs[base].unsqueeze(1), steps[:, i, : len(suffix) - 1]], dim=1)
            picked = before.gather(-1, torch.tensor(suffix).view(1, -1, 1).expand(before.shape[0], -1, 1))
            out[seq] = (picked.sum(dim=(1, 2)), steps[:, i, len(suffix) - 1])
    for seq in seqs:
        if len(seq) == base:
            out[seq] = (torch.zeros(trunk.logprobs[base].shape[0]), trunk.logprobs[base])
    return out


def _common_prefix(seqs) -> tuple[int, ...]:
    first = seqs[0]
    n = len(first)
    for seq in seqs[1:]:
        n = min(n, len(seq))
        for k in range(n):
            if seq[k] != first[k]:
                n = k
                break
    return tuple(first[:n])


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)
