"""An HTTP client for OpenAI-compatible completions servers that return top-K log-probabilities.

Speaks vLLM's dialect of the legacy ``/v1/completions`` API (token-id prompts,
``return_tokens_as_token_ids``), which proxytool serve follows too, and copes with servers that take
text prompts only and key log-probabilities by token strings (llama.cpp's and llama-cpp-python's).
Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential backoff, and
so are replies that cannot be right (:func:`check_positions`: a NaN or infinite log-probability, fewer
entries than asked, an id outside the vocabulary or ids that do not spell the reply's text). A server
that keeps failing ends the run with one :class:`RunFailed` line (exit code 1); a refused request or a
malformed URL is one :class:`ProxyToolError` line (exit code 2).
"""

import math
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import sleep

import httpx

from proxytool.errors import ProxyToolError, RunFailed

API_KEY_ENV = "PROXYTOOL_BASE_API_KEY"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Endpoint:
    """Where a remote base lives: ``url`` ends with ``/v1``; ``model`` None = the server's only model."""

    url: str
    model: str | None = None
    api_key: str | None = None

    @property
    def root(self) -> str:
        """The server root (vLLM's ``/tokenize`` sits beside ``/v1``, not under it)."""
        return self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url


def is_url(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def check_url(name: str) -> str:
    """``name`` if it is a usable ``http(s)://HOST[:PORT]/…`` URL, else one usage error (exit code 2)."""
    url = name.partition("#")[0]
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as err:
        raise ProxyToolError(f"--base {name}: not a valid URL ({err})") from None
    if parsed.scheme not in ("http", "https"):
        raise ProxyToolError(f"--base {name}: a remote base needs an http:// or https:// URL")
    if not parsed.host:
        raise ProxyToolError(f"--base {name}: the URL has no host (http://HOST:PORT/v1)")
    if port is not None and not 0 < port < 65536:
        raise ProxyToolError(f"--base {name}: port {port} is outside 1..65535")
    return name


def parse_endpoint(name: str, api_key: str | None = None) -> Endpoint:
    """``http(s)://HOST:PORT/v1#model``: the model after ``#``; the key from the argument or the env."""
    url, _, model = check_url(name).partition("#")
    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    return Endpoint(url=url, model=model or None, api_key=api_key or os.environ.get(API_KEY_ENV) or None)


@dataclass
class Position:
    """One generated position: the token the server chose (None if unmappable) and its top-K ids."""

    token: int | None
    top: dict[int, float]
    n_keys: int  # log-probabilities the server sent for this position (before mapping keys to ids)
    by_id: bool = True  # keyed "token_id:N"; token strings may collide (lone bytes), so fewer keys than asked
    extra: dict[int, float] = field(default_factory=dict)  # the asked extra ids the server returned, any rank
    raw: dict = field(default_factory=dict, repr=False)  # the position as sent: key -> log-prob (for the checks)
    keys: dict = field(default_factory=dict, repr=False)  # key -> id (None: no single token; -1: malformed)


@dataclass
class Calls:
    """How many completion requests were made (retries not counted), for calls-per-token figures."""

    completions: int = 0
    retries: int = 0


@dataclass
class RemoteClient:
    """One remote server. ``key_to_id`` maps a token key of the response (``"token_id:5"`` or a token
    string) to an id of the shared tokenizer, or None when it names no single token."""

    endpoint: Endpoint
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 0.5
    transport: httpx.BaseTransport | None = None  # tests inject a fake server here
    calls: Calls = field(default_factory=Calls)

    def __post_init__(self):
        headers = {"Authorization": f"Bearer {self.endpoint.api_key}"} if self.endpoint.api_key else {}
        self._http = httpx.Client(timeout=self.timeout, headers=headers, transport=self.transport)
        self._model = self.endpoint.model
        self._checked = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    @property
    def where(self) -> str:
        return self.endpoint.url

    def model(self) -> str:
        """The model to ask for: the one named after ``#``, else the server's only model."""
        if not self._checked:
            self._checked = True
            listed = [m.get("id") for m in self._request("GET", "/models").get("data", [])]
            if self._model is not None:
                if self._model not in listed:
                    raise ProxyToolError(
                        f"the server at {self.where} has no model '{self._model}' (it serves: {', '.join(listed)})"
                    )
            elif len(listed) != 1:
                raise ProxyToolError(
                    f"the server at {self.where} serves {len(listed)} models ({', '.join(map(str, listed))}); "
                    f"name one as {self.where}#MODEL"
                )
            else:
                self._model = listed[0]
        return self._model

    def complete(
        self,
        prompt: list[int] | str,
        *,
        max_tokens: int,
        top_k: int,
        key_to_id: Callable[[str], int | None],
        echo: bool = False,
        extra_ids: Sequence[int] = (),
        check: bool = True,
    ) -> list[Position]:
        """Greedy completion of up to ``max_tokens`` tokens with the top ``top_k`` log-probs at each position.

        With ``echo`` the prompt's positions come first (the first one has no log-probs). Servers add the
        chosen (or prompt) token to the top K when it is not among them; only the K best are kept.
        ``extra_ids`` are sent as ``logprob_token_ids`` (proxytool serve; servers that do not know the
        field ignore it): those of them the server returns at a position go to ``Position.extra``.
        Where ``key_to_id`` carries the shared tokenizer (``key_to_id.tokenizer``), every position is
        checked against its vocabulary (:func:`check_positions`); a bad reply is asked again, like a
        failed call, and ends the run with one line when it stays bad; ``check=False`` (a probe of what
        the server does) returns the reply as it came.
        """
        body = {
            "model": self.model(),
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "logprobs": top_k,
            "echo": echo,
            "return_tokens_as_token_ids": True,  # vLLM / proxytool serve; others ignore it
        }
        if extra_ids:
            body["logprob_token_ids"] = sorted(set(extra_ids))
        with self._lock:  # rows call concurrently
            self.calls.completions += 1
        tokenizer = getattr(key_to_id, "tokenizer", None)
        echoed = (len(prompt) if isinstance(prompt, list) else 0) if echo else None
        for attempt in range(self.retries + 1):
            reply = self._request("POST", "/completions", body)
            positions, text = self._positions(reply, top_k, key_to_id, frozenset(extra_ids))
            if not check:
                return positions
            try:
                check_positions(positions, text, top_k, tokenizer, echoed=echoed)
            except BadReply as bad:
                if attempt == self.retries:
                    raise RunFailed(
                        f"the remote base at {self.where} sent a bad reply {attempt + 1} times (last: {bad})"
                    ) from None
                self._wait(attempt, None)
                continue
            return positions
        raise AssertionError("unreachable")

    def _positions(
        self, reply: dict, top_k: int, key_to_id: Callable[[str], int | None], asked: frozenset[int]
    ) -> tuple[list[Position], str | None]:
        """The reply's positions (top ``top_k`` mapped to ids, the ``asked`` extra ids) and its text."""
        try:
            choice = reply["choices"][0]
            logprobs = choice.get("logprobs")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProxyToolError(f"the server at {self.where} sent a completion without choices") from None
        if not isinstance(logprobs, dict) or not logprobs.get("top_logprobs"):
            raise ProxyToolError(
                f"the server at {self.where} returned no log-probabilities; a remote base needs `logprobs` "
                "on /v1/completions (vLLM: --max-logprobs >= --remote-top-k)"
            )
        tops = logprobs["top_logprobs"]
        tokens = logprobs.get("tokens") or [None] * len(tops)
        positions = []
        for key, top in zip(tokens, tops):
            top = top if isinstance(top, dict) else {}
            mapped = {k: _key_id(key_to_id, k) for k in top}
            ids = {}
            for lp, k in sorted(((lp, k) for k, lp in top.items() if _number(lp)), reverse=True)[:top_k]:
                if mapped[k] is not None:
                    ids[mapped[k]] = max(float(lp), ids.get(mapped[k], float("-inf")))
            extra = {mapped[k]: float(lp) for k, lp in top.items() if mapped[k] in asked and _number(lp)}
            by_id = all(k.startswith("token_id:") for k in top)
            token = _key_id(key_to_id, key) if isinstance(key, str) else None
            positions.append(Position(token, ids, len(top), by_id, extra, raw=top, keys=mapped))
        text = choice.get("text")
        return positions, text if isinstance(text, str) else None

    def tokenize(self, text: str) -> list[int] | None:
        """The server's token ids for ``text`` via its tokenize endpoint, or None if it has none."""
        model = self.model()
        tries = [
            (self.endpoint.root + "/tokenize", {"model": model, "prompt": text, "add_special_tokens": False}),
            (self.endpoint.root + "/extras/tokenize", {"input": text, "add_special_tokens": False}),
        ]
        for url, body in tries:
            try:
                reply = self._request("POST", url, body, absolute=True)
            except _NotFound:
                continue
            tokens = reply.get("tokens")
            if isinstance(tokens, list):
                return [int(t) for t in tokens]
        return None

    def _request(self, method: str, path: str, body: dict | None = None, absolute: bool = False) -> dict:
        url = path if absolute else self.endpoint.url + path
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                if last:
                    raise RunFailed(
                        f"cannot reach the remote base at {self.where}: {type(exc).__name__}: {exc}"
                    ) from None
                self._wait(attempt, None)
                continue
            if response.status_code in RETRY_STATUS and not last and not _invalid_request(response):
                self._wait(attempt, response.headers.get("retry-after"))
                continue
            if response.status_code in (404, 405) and absolute:
                raise _NotFound(url)
            if response.status_code in (404, 405) and path == "/completions":
                raise RemoteHTTPError(
                    response.status_code,
                    f"the server at {self.where} has no /v1/completions: a chat-only API cannot continue a partial "
                    f"reply, which proxy-tuning needs at every token (docs/remote.md); it said: {_message(response)}",
                )
            if response.status_code >= 400:
                raise RemoteHTTPError(
                    response.status_code,
                    f"the remote base at {self.where} answered {method} {path.rsplit('/', 1)[-1]} with HTTP "
                    f"{response.status_code}: {_message(response)}",
                )
            try:
                return response.json()
            except ValueError:
                raise ProxyToolError(f"the remote base at {self.where} sent a reply that is not JSON") from None
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        with self._lock:
            self.calls.retries += 1
        delay = self.backoff * 2**attempt * (1 + random.random() / 4)
        if retry_after is not None:
            try:
                delay = max(delay, min(float(retry_after), 60.0))
            except ValueError:
                pass
        sleep(delay)


class _NotFound(Exception):
    pass


class BadReply(Exception):
    """A reply that cannot come from a server of the shared vocabulary; asked again like a failed call."""


LOGPROB_SLACK = 1e-3  # a log-probability above this is no log-probability (rounding may give +1e-7)


def check_positions(
    positions: list[Position], text: str | None, top_k: int, tokenizer=None, *, echoed: int | None = None
) -> None:
    """Raise :class:`BadReply` unless every position of a reply could be right.

    Every log-probability is finite and at most 0; every keyed position holds at least ``top_k`` entries
    (or the whole vocabulary) where keys are ids (token strings may collide); every id lies inside the
    shared tokenizer's vocabulary; and the generated ids spell the reply's text (a server whose ids mean
    other tokens has another vocabulary). ``echoed``: the prompt's length when it was echoed (its first
    position may be empty, and the text starts with the prompt's).
    """
    vocab = len(tokenizer) if tokenizer is not None else None
    wanted = top_k if vocab is None else min(top_k, vocab)
    for j, p in enumerate(positions):
        if not p.raw:
            if echoed is not None and j == 0:
                continue
            raise BadReply(f"position {j} has no log-probabilities")
        bad = next((lp for lp in p.raw.values() if lp is not None and not _log_probability(lp)), None)
        if bad is not None:
            raise BadReply(f"log-probability {bad!r} at position {j}")
        if p.by_id and p.n_keys < wanted:
            raise BadReply(
                f"{p.n_keys} log-probabilities at position {j} where {wanted} were asked "
                "(lower --remote-top-k or raise the server's limit, vLLM: --max-logprobs)"
            )
        ids = [i for i in (*p.keys.values(), p.token) if i is not None]
        outside = next((i for i in ids if i < 0 or (vocab is not None and i >= vocab)), None)
        if outside is not None:
            raise BadReply(f"token id {outside} at position {j} is outside the vocabulary ({vocab} tokens)")
    did_echo = echoed is not None and bool(positions) and not positions[0].raw  # a server may ignore `echo`
    _check_text(positions, text, tokenizer, echoed if did_echo else 0)


def _check_text(positions: list[Position], text: str | None, tokenizer, skip: int) -> None:
    """The generated ids (after ``skip`` echoed ones) must spell the reply's text, whitespace and
    incomplete characters aside (servers clean up spaces; a character may straddle the prompt's end)."""
    ids = [p.token for p in positions[skip:]]
    if tokenizer is None or text is None or not ids or None in ids:
        return
    spelled = _letters(tokenizer.decode(ids, skip_special_tokens=True))
    for special in tokenizer.all_special_tokens:  # servers may or may not write special tokens into the text
        text = text.replace(special, "")
    if spelled not in _letters(text):
        raise BadReply(f"its token ids spell {spelled[:40]!r}, not its text: the server has another vocabulary")


def _letters(text: str) -> str:
    """Letters and digits only: servers differ in spaces, half characters (U+FFFD) and punctuation clean-up."""
    return "".join(c for c in text if c.isalnum())


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _log_probability(value) -> bool:
    return _number(value) and math.isfinite(value) and value <= LOGPROB_SLACK


def _key_id(key_to_id: Callable[[str], int | None], key: str) -> int | None:
    """The id a reply's key names; -1 for a malformed ``token_id:`` key (outside every vocabulary)."""
    try:
        return key_to_id(key)
    except ValueError:
        return -1


class RemoteHTTPError(ProxyToolError):
    """The server refused a request (4xx: exit code 2), or kept failing (429, 5xx after the retries: a run
    that failed on valid input, exit code 1)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.exit_code = RunFailed.exit_code if status in RETRY_STATUS else ProxyToolError.exit_code


def _invalid_request(response: httpx.Response) -> bool:
    """A 500 that is really a refused request: llama-cpp-python answers a body it cannot validate (e.g. a
    token-id prompt) with HTTP 500 "N validation errors: ..."; retrying cannot help."""
    return response.status_code == 500 and "validation error" in _message(response).lower()


def _message(response: httpx.Response) -> str:
    """The server's own error message, on one line."""
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") or error.get("detail") if isinstance(error, dict) else error
        text = str(message if message is not None else body)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:300] or response.reason_phrase
