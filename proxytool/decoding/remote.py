"""A base model behind an OpenAI-compatible HTTP API, as a logit source.

The server gives its top-K log-probabilities per position, not full logits, so the base term of the
proxy formula is ``log p_M(v)`` for the K candidates the server returned and ``-inf`` for every other
token (docs/decoding.md). The source keeps the :class:`ModelSource` contract (prefill / extend /
truncate over a per-generation state), so the :class:`Stepper` and the decoding loop are unchanged.

Round trips are the cost. With ``lookahead`` L each call asks for up to L greedy tokens with their
top-K at every position: the server's log-probabilities at a context do not depend on how we got
there, so whenever decoding follows the server's greedy path the next positions are already known
and cost no call (:meth:`RemoteSource.draft` tells the decoding loop how far, so the local pair
scores those positions in one forward). That is exact for greedy decoding and for sampling alike:
the distribution at every step is the same top-K proxy distribution; only the number of calls changes.
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from proxytool.decoding.formats import Prompt, PromptFormat
from proxytool.decoding.sources import Candidates, Group, Source
from proxytool.errors import ProxyToolError
from proxytool.models.remote_client import RemoteClient, RemoteHTTPError

TOKENIZER_PROBE = (
    "The poll of 1,200 likely voters: Harris 48%, Trump 47 (margin ±3).\n\n"
    "def add(a, b):\n    return a + b  # café, naïve, 日本語 🙂\n"
)


@dataclass
class _Path:
    """What one call returned: from ``anchor``, the server's greedy ``tokens`` and the top-K before each."""

    anchor: list[int]
    tokens: list[int | None]
    dists: list[dict[int, float]]  # dists[j]: top-K log-probs after anchor + tokens[:j]
    extras: list[dict[int, float]] | None = None  # extras[j]: the asked extra ids' log-probs there

    def covers(self, j: int, ids: set[int]) -> bool:
        """Whether position j knows the base log-prob of every id in ``ids``."""
        return all(i in self.dists[j] or (self.extras is not None and i in self.extras[j]) for i in ids)

    def dist(self, j: int, ids: set[int]) -> dict[int, float]:
        """The candidate set at position j: the top K plus those of ``ids`` the server scored."""
        out = dict(self.dists[j])
        if ids and self.extras is not None:
            out.update({i: lp for i, lp in self.extras[j].items() if i in ids and i not in out})
        return out

    def offset(self, context: list[int]) -> int | None:
        """j such that ``context == anchor + tokens[:j]`` and dists[j] is known, else None."""
        n, j = len(self.anchor), len(context) - len(self.anchor)
        if not 0 <= j < len(self.dists) or context[n:] != self.tokens[:j] or context[:n] != self.anchor:
            return None
        return j


@dataclass
class RemoteState:
    """One generation on the remote base: each prompt's token ids so far and its last call's path."""

    contexts: list[list[int]]
    paths: list[_Path | None] = field(default_factory=list)
    known: int | None = None  # after a lazy extend: how many of its columns hold scores (see extend)
    retired: set[int] = field(default_factory=set)  # finished rows: never called for again (see retire)


class TokenKeys:
    """Maps the keys of a server's log-probabilities to ids: ``"token_id:5"`` (vLLM, proxytool serve)
    directly, token strings (llama.cpp) through the shared tokenizer's pieces; an ambiguous string
    (e.g. a lone byte of a multi-byte character) maps to None and is dropped."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._pieces: dict[str, int | None] | None = None

    def __call__(self, key: str) -> int | None:
        if key.startswith("token_id:"):
            return int(key[len("token_id:") :])
        if self._pieces is None:
            pieces: dict[str, int | None] = {}
            for i in range(len(self.tokenizer)):
                piece = self.tokenizer.decode([i])
                pieces[piece] = None if piece in pieces else i
            self._pieces = pieces
        return self._pieces.get(key)


class RemoteSource(Source):
    """The base behind an HTTP API: one row group, top-K log-probabilities (``-inf`` elsewhere)."""

    local = False

    def __init__(
        self,
        client: RemoteClient,
        tokenizer,
        prompt_format: PromptFormat,
        *,
        top_k: int = 20,
        lookahead: int = 0,
        draft: str = "pair",
        text_prompts: bool = False,
        extra: int = 0,
    ):
        if draft not in ("base", "pair"):
            raise ProxyToolError(f"--remote-draft must be base or pair (got '{draft}')")
        if top_k < 1:
            raise ProxyToolError(f"--remote-top-k must be >= 1 (got {top_k})")
        if lookahead < 0:
            raise ProxyToolError(f"--remote-lookahead must be >= 0 (got {lookahead})")
        self.client = client
        self.tokenizer = tokenizer
        self.groups = (Group(None, prompt_format),)
        self.top_k = top_k
        self.lookahead = lookahead
        self.text_prompts = text_prompts
        self.guess_length = lookahead if draft == "pair" else 0  # Stepper.propose: the pair's guesses
        # Stepper: the pair's top `extra_top` (and the EOS ids) join the candidate set (logprob_token_ids);
        # 0 where off or where the server does not score extra ids (connect finds out)
        self.extra_top = extra
        self.vocab_size = len(tokenizer)
        self.device = torch.device("cpu")
        self.keys = TokenKeys(tokenizer)
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="proxytool-remote")

    def calls(self) -> tuple[int, int]:
        return self.client.calls.completions, self.client.calls.retries

    def prefill(
        self,
        prompts: list[Prompt],
        all_positions: bool = False,
        *,
        candidates: Candidates | None = None,
        room: int | None = None,
    ) -> tuple[RemoteState, list[torch.Tensor]]:
        """The top-K after each prompt; with ``candidates.guesses`` the same call scores them too (see
        prefetch). ``candidates.after``: per row, ids that join the candidate set after the prompt (the
        Stepper's pair top-M and EOS); ``candidates.along``: those along the guess, asked in the same call."""
        if all_positions:
            raise ProxyToolError("scoring prompt positions is not supported with a remote base")
        candidates = candidates or Candidates()
        state = RemoteState([list(r) for r in self.encode(prompts)])
        state.paths = [None] * len(state.contexts)
        if candidates.guesses is not None and self.guess_length > 0:
            asked = [_union(candidates.after, i, candidates.along) for i in range(len(state.contexts))]
            jobs = list(zip(state.contexts, candidates.guesses, asked))
            state.paths = list(self._pool.map(lambda job: self._call(*job), jobs))
        return state, [self._next(state, candidates.after)]

    def extend(
        self,
        state: RemoteState,
        tokens: torch.Tensor,
        candidates: list[list[set[int]]] | None = None,
        lazy: bool = False,
    ) -> list[torch.Tensor]:
        """Append ``tokens`` [prompts, k]; the top-K log-probs after each [prompts, k, vocab].

        ``candidates[row][j]``: ids that join the candidate set after the j-th token (see prefill).
        ``lazy``: after the first column, stop at the first one the last calls do not cover (no call for
        positions a draft may never reach); ``state.known`` says how many columns hold scores."""
        state.known = None
        if tokens.shape[1] == 0:
            return [torch.full((len(state.contexts), 0, self.vocab_size), float("-inf"))]
        hint = None if candidates is None else [set().union(*row) for row in candidates]  # asked at once on a miss
        columns = []
        rows = tokens.tolist()
        for j in range(tokens.shape[1]):
            for context, row in zip(state.contexts, rows):
                context.append(int(row[j]))
            wanted = None if candidates is None else [row[j] for row in candidates]
            if lazy and j > 0 and not self._known(state, wanted):
                state.known = j  # the contexts take every token all the same: the caller truncates
                for context, row in zip(state.contexts, rows):
                    context.extend(int(t) for t in row[j + 1 :])
                blank = torch.full((len(state.contexts), self.vocab_size), float("-inf"))
                columns.extend([blank] * (tokens.shape[1] - j))
                break
            columns.append(self._next(state, wanted, hint))
        return [torch.stack(columns, dim=1)]

    def _known(self, state: RemoteState, wanted: list[set[int]] | None) -> bool:
        """Whether every live row's position after its context (with the ``wanted`` ids) is already known."""
        return all(
            self._row_known(state, i, set() if wanted is None else wanted[i])
            for i in range(len(state.contexts))
            if i not in state.retired
        )

    @staticmethod
    def _row_known(state: RemoteState, row: int, ids: set[int]) -> bool:
        """Whether row ``row``'s last call knows the position after its context, ``ids`` included."""
        path = state.paths[row]
        j = path.offset(state.contexts[row]) if path is not None else None
        return j is not None and path.covers(j, ids)

    def known(self, state: RemoteState, k: int) -> int:
        return k if state.known is None else state.known

    def retire(self, state: RemoteState, rows: set[int]) -> None:
        """Rows whose generation ended: no call is made for them from now on, and their scores are
        zeros (read by nobody)."""
        state.retired |= set(rows)

    def truncate(self, state: RemoteState, drop: int) -> None:
        if drop > 0:
            state.contexts = [c[:-drop] for c in state.contexts]

    def draft(self, state: RemoteState, tokens: torch.Tensor) -> list[list[int] | None]:
        """Per row, the tokens that may follow ``tokens`` [prompts] at no call: the server's greedy
        path after them, as far as the position after the last one is known (None: a retired row)."""
        drafts = []
        for row, (context, path, token) in enumerate(zip(state.contexts, state.paths, tokens.tolist())):
            if row in state.retired:
                drafts.append(None)
                continue
            j = path.offset(context) if path is not None else None
            if j is None or j >= len(path.tokens) or path.tokens[j] != token:
                drafts.append([])
                continue
            drafts.append([t for t in path.tokens[j + 1 : len(path.dists) - 1]])
            if None in drafts[-1]:
                drafts[-1] = drafts[-1][: drafts[-1].index(None)]
        return drafts

    def prefetch(
        self,
        state: RemoteState,
        tokens: torch.Tensor,
        guesses: list[list[int]],
        candidates: list[list[set[int]]] | None = None,
        rows: Sequence[int] | None = None,
    ) -> None:
        """One call per row of ``rows`` (default: every row not retired) for the positions after ``tokens``
        [prompts] and then along ``guesses`` (echoed, so the server scores the guessed tokens), and the
        server's greedy path beyond them; ``candidates[row]``: the extra ids along the guess, asked in the same call."""
        anchors = [context + [t] for context, t in zip(state.contexts, tokens.tolist())]
        asked = [set().union(*candidates[i]) if candidates is not None else set() for i in range(len(anchors))]
        rows = [i for i in (range(len(anchors)) if rows is None else rows) if i not in state.retired]
        jobs = [(anchors[i], guesses[i], asked[i]) for i in rows]
        for i, path in zip(rows, self._pool.map(lambda job: self._call(*job), jobs)):
            state.paths[i] = path

    def _next(
        self, state: RemoteState, extra: list[set[int]] | None = None, hint: list[set[int]] | None = None
    ) -> torch.Tensor:
        """The log-probs after each row's context [prompts, vocab] on the candidate set (top K, plus
        ``extra[row]`` where given); calls the server where unknown, asking ``extra`` (and ``hint``) ids."""
        wanted = [set() if extra is None else set(extra[i]) for i in range(len(state.contexts))]
        missing: dict[tuple, list[int]] = {}  # rows with the same context share one call (n > 1, sampling)
        for i, context in enumerate(state.contexts):
            if i not in state.retired and not self._row_known(state, i, wanted[i]):
                missing.setdefault(tuple(context), []).append(i)
        jobs = [
            (list(c), (), set().union(*(wanted[i] | _union(None, i, hint) for i in rows)))
            for c, rows in missing.items()
        ]
        for rows, path in zip(missing.values(), self._pool.map(lambda job: self._call(*job), jobs)):
            for i in rows:
                state.paths[i] = path
        out = torch.full((len(state.contexts), self.vocab_size), float("-inf"))
        for row, (context, path) in enumerate(zip(state.contexts, state.paths)):
            if row in state.retired:
                out[row] = 0.0
                continue
            dist = path.dist(path.offset(context), wanted[row])
            ids = [i for i in dist if 0 <= i < self.vocab_size]
            out[row, ids] = torch.tensor([dist[i] for i in ids], dtype=torch.float32)
        return out

    def _call(self, context: list[int], guess: list[int] = (), extra: set[int] = frozenset()) -> _Path:
        """From ``context``: the top K after it, after each ``guess`` prefix (echoed), then greedy onwards;
        ``extra`` ids are asked too (``logprob_token_ids``) where the server scores them."""
        extra = extra if self.extra_top > 0 else frozenset()
        positions = self.client.complete(
            self._prompt(context + list(guess)),
            max_tokens=max(1, self.lookahead),
            top_k=self.top_k,
            key_to_id=self.keys,
            echo=bool(guess),
            extra_ids=sorted(extra),
        )
        if guess:  # echoed prompt positions first: keep those after the context
            positions = positions[len(context) :]
            if len(positions) <= len(guess) or any(p.token != g for p, g in zip(positions[: len(guess)], guess)):
                self.guess_length = 0  # this server does not echo the prompt's tokens: no guesses from now on
                return self._call(context, (), extra)
        if not positions or not positions[0].top:
            raise ProxyToolError(f"the server at {self.client.where} returned no log-probabilities for a position")
        wanted = min(self.top_k, self.vocab_size)
        if positions[0].by_id and positions[0].n_keys < wanted:
            raise ProxyToolError(
                f"the server at {self.client.where} returned {positions[0].n_keys} log-probabilities per position "
                f"where {wanted} were asked: lower --remote-top-k or raise the server's limit (vLLM: --max-logprobs)"
            )
        extras = [p.extra for p in positions] if extra else None
        return _Path(list(context), [p.token for p in positions], [p.top for p in positions], extras)

    def _prompt(self, context: list[int]) -> list[int] | str:
        if not self.text_prompts:
            return list(context)
        text = self.tokenizer.decode(context)
        if self.tokenizer(text, add_special_tokens=False)["input_ids"] != context:
            raise ProxyToolError(
                f"the server at {self.client.where} takes text prompts only, and this context does not survive "
                "the round trip ids -> text -> ids; use a server that accepts token ids (vLLM, proxytool serve)"
            )
        return text


def connect(
    client: RemoteClient,
    tokenizer,
    prompt_format: PromptFormat,
    *,
    top_k: int,
    lookahead: int,
    draft: str = "pair",
    extra: int = 0,
    n_eos: int = 1,
):
    """A RemoteSource on a server whose tokenizer is checked against the shared one (before decoding).

    Token-id prompts are tried first; a server that rejects them gets text (llama-cpp-python 0.3.36 answers
    HTTP 500 "validation errors" naming the prompt, others 400/422). With ``extra`` > 0 a second probe asks
    extra ids (``logprob_token_ids``), as many as one decoding call may ask (:func:`extra_ids_per_call`,
    ``n_eos`` EOS ids included): a server that refuses the field or that many ids, leaves them out, or
    returns them instead of its top K (vLLM) gets none from then on (``extra_top`` 0: the top-K set alone).
    """
    check_tokenizer(client, tokenizer)
    source = RemoteSource(client, tokenizer, prompt_format, top_k=top_k, lookahead=lookahead, draft=draft, extra=extra)
    probe = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"][:8]
    # ids a top K rarely holds (the end of the vocabulary), as many as a call of this decoding may ask
    n_asked = min(len(tokenizer), extra_ids_per_call(extra, lookahead, n_eos)) if extra > 0 else 0
    asked = set(range(len(tokenizer) - n_asked, len(tokenizer)))
    try:
        path = source._call(probe, (), set())  # the top K alone first
    except RemoteHTTPError as err:
        refused = err.status in (400, 422) or (err.status == 500 and "validation error" in str(err).lower())
        if not (refused and "prompt" in str(err).lower()):
            raise
        source.text_prompts = True
        source.guess_length = 0  # guessed tokens need not survive ids -> text -> ids: the base's path only
        path = source._call(probe, (), set())
    if asked and not _adds_extra_ids(source, probe, asked, path):
        source.extra_top = 0  # the top-K candidate set alone
    client.calls.completions = client.calls.retries = 0  # count decoding's calls only
    return source


def _adds_extra_ids(source: RemoteSource, probe: list[int], asked: set[int], plain: _Path) -> bool:
    """Whether the server scores the asked ids *beside* its top K (proxytool serve), rather than refusing
    them (HTTP 400/422), ignoring them, or answering them *instead of* the top K: vLLM 0.32 returns the
    sampled token plus exactly the asked ids, which would silently replace the base's candidates."""
    try:
        positions = source.client.complete(
            source._prompt(probe),
            max_tokens=1,
            top_k=source.top_k,
            key_to_id=source.keys,
            extra_ids=sorted(asked),
            check=False,
        )
    except RemoteHTTPError as err:
        if err.status in (400, 422):
            return False
        raise
    first = positions[0] if positions else None
    if first is None or not asked <= set(first.extra or {}):
        return False
    return set(plain.dists[0]) <= {i for i in first.keys.values() if i is not None}  # the top K is still there


def extra_ids_per_call(extra: int, lookahead: int, n_eos: int) -> int:
    """The most extra ids one call asks: the pair's top ``extra`` and the EOS ids at each position it
    covers (after the context, along a guess of up to ``lookahead`` tokens, and after the guess)."""
    return (extra + n_eos) * (lookahead + 2)


def _union(first: list[set[int]] | None, row: int, rest: list | None) -> set[int]:
    """Row ``row``'s ids of ``first`` (a set per row) and of ``rest`` (a set, or a list of sets, per row)."""
    out = set(first[row]) if first is not None else set()
    if rest is not None:
        more = rest[row]
        out |= set().union(*more) if isinstance(more, list) else set(more)
    return out


def check_tokenizer(client: RemoteClient, tokenizer) -> None:
    """Raise unless the server tokenizes a probe text to the same ids as the shared tokenizer."""
    local = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    remote = client.tokenize(TOKENIZER_PROBE)
    if remote is None:
        raise ProxyToolError(
            f"cannot check the tokenizer of the server at {client.where}: it has no tokenize endpoint "
            "(/tokenize or /extras/tokenize)"
        )
    if remote != local:
        first = next((i for i, (a, b) in enumerate(zip(local, remote)) if a != b), min(len(local), len(remote)))
        raise ProxyToolError(
            f"the server at {client.where} uses a different tokenizer: a probe text gives {len(remote)} tokens "
            f"there and {len(local)} here, first difference at token {first}; proxy-tuning needs one shared vocabulary"
        )
