"""A fault-injecting HTTP proxy between proxytool and its remote base (a real ``proxytool serve``).

It forwards every request to the upstream with httpx and, on the completion calls chosen by a
:class:`Fault`, changes the reply the way a broken server or network would: a NaN log-probability,
fewer entries than asked, an id outside the vocabulary, ids of another vocabulary, a dropped
connection, or a 503. Faults hit the *last* position of a reply, a lookahead position when the client
asks several tokens per call. Run it with ``with FaultProxy(upstream) as proxy:``; always stopped.
"""

import asyncio
import json
import math
import threading
from dataclasses import dataclass

import httpx
import uvicorn

from proxytool.serving.server import free_port

KINDS = ("nan", "inf", "short", "outside", "foreign", "drop", "503")


@dataclass
class Fault:
    """``kind`` on completion calls ``first``, ``first + 1``, … (``count`` of them; None: every later one)."""

    kind: str
    first: int
    count: int | None = 1

    def hits(self, call: int) -> bool:
        return call >= self.first and (self.count is None or call < self.first + self.count)


class FaultProxy:
    """An ASGI app forwarding to ``upstream`` (a server root, e.g. ``http://127.0.0.1:PORT``), served by
    uvicorn on 127.0.0.1 in a thread. ``fault`` may be changed between runs; ``calls`` counts completions."""

    def __init__(self, upstream: str, vocab_size: int, fault: Fault | None = None):
        self.upstream, self.vocab_size, self.fault = upstream, vocab_size, fault
        self.calls = 0
        self.delay = 0.0  # seconds each completion call waits before it is forwarded (a slow upstream)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="critical", interface="asgi3")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fault-proxy", daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the fault proxy did not start")
            threading.Event().wait(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    async def app(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        fault = None
        if scope["path"] == "/v1/completions":
            self.calls += 1
            await asyncio.sleep(self.delay)
            fault = self.fault.kind if self.fault is not None and self.fault.hits(self.calls) else None
        if fault == "503":
            return await _reply(send, 503, b'{"error": {"message": "injected 503"}}')
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.lower() not in (b"host", b"content-length")}
        url = self.upstream + scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        async with httpx.AsyncClient(timeout=60) as client:
            upstream = await client.request(scope["method"], url, content=body, headers=headers)
        payload = upstream.content
        if fault == "drop":  # promise a body, send a piece of it, then end the connection
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
            await send({"type": "http.response.body", "body": payload[:10], "more_body": True})
            raise ConnectionAbortedError("injected drop")
        if fault is not None and upstream.status_code == 200:
            payload = json.dumps(self.corrupt(upstream.json(), fault)).encode()
        await _reply(send, upstream.status_code, payload)

    def corrupt(self, reply: dict, kind: str) -> dict:
        logprobs = reply["choices"][0]["logprobs"]
        last = logprobs["top_logprobs"][-1]
        keys = list(last)
        if kind in ("nan", "inf"):
            last[keys[-1]] = math.nan if kind == "nan" else math.inf
        elif kind == "short":
            for key in keys[1:]:
                del last[key]
        elif kind == "outside":
            last[f"token_id:{self.vocab_size + 7}"] = last.pop(keys[-1])
        elif kind == "foreign":  # every id renamed: a server whose vocabulary numbers tokens otherwise
            logprobs["tokens"] = [self.rename(t) for t in logprobs["tokens"]]
            logprobs["top_logprobs"] = [
                None if top is None else {self.rename(k): v for k, v in top.items()} for top in logprobs["top_logprobs"]
            ]
        return reply

    def rename(self, key: str) -> str:
        return f"token_id:{(int(key.removeprefix('token_id:')) + 1) % self.vocab_size}"


async def _reply(send, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
