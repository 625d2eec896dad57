"""An HTTP client for OpenAI-compatible completions servers that return top-K log-probabilities.

Speaks vLLM's dialect of the legacy ``/v1/completions`` API (token-id prompts,
``return_tokens_as_token_ids``), which proxytool serve follows too, and copes with servers that take
text prompts only and key log-probabilities by token strings (llama.cpp's and llama-cpp-python's).
Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential backoff;
everything else becomes one :class:`ProxyToolError` line.
"""

import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import sleep

import httpx

from proxytool.errors import ProxyToolError

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


def parse_endpoint(name: str, api_key: str | None = None) -> Endpoint:
    """``http(s)://HOST:PORT/v1#model``: the model after ``#``; the key from the argument or the env."""
    url, _, model = name.partition("#")
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
    ) -> list[Position]:
        """Greedy completion of up to ``max_tokens`` tokens with the top ``top_k`` log-probs at each position.

        With ``echo`` the prompt's positions come first (the first one has no log-probs). Servers add the
        chosen (or prompt) token to the top K when it is not among them; only the K best are kept.
        ``extra_ids`` are sent as ``logprob_token_ids`` (proxytool serve; servers that do not know the
        field ignore it): those of them the server returns at a position go to ``Position.extra``.
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
        asked = frozenset(extra_ids)
        with self._lock:  # rows call concurrently
            self.calls.completions += 1
        reply = self._request("POST", "/completions", body)
        try:
            logprobs = reply["choices"][0].get("logprobs")
        except (KeyError, IndexError, TypeError):
            raise ProxyToolError(f"the server at {self.where} sent a completion without choices") from None
        if not logprobs or not logprobs.get("top_logprobs"):
            raise ProxyToolError(
                f"the server at {self.where} returned no log-probabilities; a remote base needs `logprobs` "
                "on /v1/completions (vLLM: --max-logprobs >= --remote-top-k)"
            )
        tokens = logprobs.get("tokens") or [None] * len(logprobs["top_logprobs"])
        positions = []
        for key, top in zip(tokens, logprobs["top_logprobs"]):
            ids = {}
            best = sorted(((lp, k) for k, lp in (top or {}).items() if lp is not None), reverse=True)[:top_k]
            for lp, k in best:
                i = key_to_id(k)
                if i is not None:
                    ids[i] = max(float(lp), ids.get(i, float("-inf")))
            by_id = all(k.startswith("token_id:") for k in (top or {}))
            extra = {}
            if asked:
                for k, lp in (top or {}).items():
                    i = key_to_id(k) if lp is not None else None
                    if i in asked:
                        extra[i] = float(lp)
            token = key_to_id(key) if key is not None else None
            positions.append(Position(token, ids, len(top or {}), by_id, extra))
        return positions

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
                    raise ProxyToolError(
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


class RemoteHTTPError(ProxyToolError):
    """The server refused a request (4xx, or 5xx after the retries)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
