"""The HTTP layer: OpenAI-compatible routes over a :class:`Scheduler`, errors in OpenAI's shape.

Bodies are read and validated here (size limit → 413, bad JSON or fields → 400); everything that
touches the models runs on the scheduler's worker thread. A request's events arrive on an asyncio
queue; a client that goes away marks its jobs cancelled, and the worker stops decoding them.
"""

import asyncio
import json
import math
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.roles import ProxyModels
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.sources import ModelSource
from proxytool.errors import ProxyToolError
from proxytool.serving.adjust import ScoreChanges, adjuster
from proxytool.serving.logprobs import (
    MAX_TOP_LOGPROBS,
    TokenInfo,
    all_position_scores,
    first_tokens,
    prompt_token_infos,
)
from proxytool.serving.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    ProxyFields,
    TokenizeRequest,
)
from proxytool.serving.scheduler import (
    DoneEvent,
    ErrorEvent,
    Job,
    QueueFull,
    Scheduler,
    ShuttingDown,
    TokenEvent,
    TooLarge,
)

MAX_LOGPROB_TOKEN_IDS = 4096
"""The most ``logprob_token_ids`` per request: a remote-base client asks its candidates along a whole
guess at once (``extra_ids_per_call`` in decoding/remote.py); each costs one gather per position."""


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "proxytool"
    expert_names: tuple[str, ...] = ()
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    batching: str = "continuous"  # or "separate": batches started at different times alternate steps
    max_body_bytes: int = 4 * 1024 * 1024
    max_logprobs: int = MAX_TOP_LOGPROBS  # vLLM's --max-logprobs: the most top log-probs per position
    host: str = "127.0.0.1"  # the bound address: with allowed_hosts, the Host headers served
    allowed_hosts: tuple[str, ...] = ()  # more Host names to serve (--allowed-hosts); "*" serves any
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to read replies (--cors-origin); none by default

    def served_hosts(self) -> list[str]:
        """Host header values served: the bound host (and loopback names for a loopback bind), plus
        ``allowed_hosts``; any for a wildcard bind (0.0.0.0, ::) unless ``allowed_hosts`` names some.
        A page on another site that reaches 127.0.0.1 through its own DNS name (rebinding) is refused."""
        if self.host in ("0.0.0.0", "::", "") and not self.allowed_hosts:
            return ["*"]
        hosts = {self.host.strip("[]"), *self.allowed_hosts}
        if self.host in LOOPBACK:
            hosts |= LOOPBACK
        return sorted(hosts | {f"[{h}]" for h in hosts if ":" in h})


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


# Over 60 lines: the routes are closures over the app's scheduler and config (FastAPI's idiom); each is short.
def create_app(models: ProxyModels, config: ServerConfig = ServerConfig()) -> FastAPI:
    """The FastAPI app; its scheduler thread starts now and stops with the app's lifespan."""
    scheduler = Scheduler(models, max_batch=config.max_batch, max_queue=config.max_queue, batching=config.batching)
    api = _API(models, config, scheduler)

    @asynccontextmanager
    async def lifespan(app):
        yield
        scheduler.close()

    app = FastAPI(title="proxytool", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.served_hosts())
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def _unexpected(request, err: Exception):  # a bug answers 500; the server keeps serving
        return JSONResponse(APIError(500, f"internal error: {err}").body(), status_code=500)

    static = resources.files("proxytool.serving") / "static"

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        path = static / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise APIError(404, f"no static file '{name}'")
        return FileResponse(str(path))

    @app.get("/health")
    async def health():
        s = scheduler.stats
        return {
            "status": "ok",
            "waiting": s.waiting,
            "active_rows": s.active_rows,
            "batches_started": s.batches_started,
            "tokens_generated": s.tokens_generated,
            "cancelled": s.cancelled,
            "batch_rows": s.batch_rows,
            "rows_joined": s.rows_joined,
            "completed": s.completed,
            "failed": s.failed,
            "batching": "continuous" if scheduler.continuous else "separate",
        }

    @app.get("/v1/models")
    async def list_models(request: Request):
        api.check_auth(request)
        return {"object": "list", "data": [api.model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str, request: Request):
        api.check_auth(request)
        api.check_model(name)
        return api.model_card()

    @app.post("/v1/completions")
    async def completions(request: Request):
        api.check_auth(request)
        body = await api.parse(request, CompletionRequest)
        if body.logprobs is not None and body.logprobs > config.max_logprobs:
            raise APIError(400, f"logprobs: at most {config.max_logprobs} (--max-logprobs)", "logprobs")
        if body.logprob_token_ids is not None:
            if len(body.logprob_token_ids) > MAX_LOGPROB_TOKEN_IDS:
                raise APIError(400, f"logprob_token_ids: at most {MAX_LOGPROB_TOKEN_IDS} ids", "logprob_token_ids")
            if any(not 0 <= t < len(api.tokenizer) for t in body.logprob_token_ids):
                raise APIError(400, f"logprob_token_ids: ids must be in [0, {len(api.tokenizer)})", "logprob_token_ids")
        prompts = 1 if isinstance(body.prompt, str) or (body.prompt and isinstance(body.prompt[0], int)) else None
        with api.admission(request, (prompts or len(body.prompt)) * body.n):
            return await api.completions(body, request)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        api.check_auth(request)
        body = await api.parse(request, TokenizeRequest)
        special = body.add_special_tokens
        ids = await api.on_worker(lambda: api.tokenizer(body.prompt, add_special_tokens=special)["input_ids"])
        return {"tokens": ids, "count": len(ids), "max_model_len": models.base.source.max_length}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        api.check_auth(request)
        body = await api.parse(request, DetokenizeRequest)
        api.check_ids(body.tokens, "tokens")
        return {"prompt": await api.on_worker(lambda: api.tokenizer.decode(body.tokens))}

    @app.get("/tokenizer_info")
    async def tokenizer_info(request: Request):
        api.check_auth(request)
        return api.tokenizer_info()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        api.check_auth(request)
        body = await api.parse(request, ChatRequest)
        with api.admission(request, body.n):
            return await api.chat(body, request)

    return app


class _API:
    def __init__(self, models: ProxyModels, config: ServerConfig, scheduler: Scheduler):
        self.models, self.config, self.scheduler = models, config, scheduler
        self.tokenizer = models.tokenizer
        self.created = int(time.time())

    # ---- checks --------------------------------------------------------------------------------
    def check_auth(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise APIError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")

    def check_model(self, name: str | None) -> None:
        """``model`` may be left out (the served model, as vLLM does); another name is a 404."""
        if name is not None and name != self.config.model_name:
            have = self.config.model_name
            raise APIError(404, f"model '{name}' does not exist; this server has '{have}'", "model", "model_not_found")

    def check_ids(self, ids: list[int], param: str) -> None:
        vocab = len(self.tokenizer)
        if any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"{param}: token ids must be in [0, {vocab})", param, "invalid_value")

    def tokenizer_info(self) -> dict:
        """vLLM's ``GET /tokenizer_info``: the served tokenizer's special tokens, context and chat template
        (lm-eval's ``tokenizer_backend=auto`` reads ``eos_token`` here, then tokenizes through /tokenize)."""
        tok = self.tokenizer
        info = {
            "tokenizer_class": type(tok).__name__,
            "model_max_length": self.models.base.source.max_length,
            "vocab_size": len(tok),
            "chat_template": getattr(tok, "chat_template", None),
        }
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = getattr(tok, name, None)
            info[name] = value if isinstance(value, str) else None
        return info

    def model_card(self) -> dict:
        return {
            "id": self.config.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "proxytool",
            "logprob_token_ids": True,  # /v1/completions scores extra ids at every position (docs/remote.md)
        }

    async def parse(self, request: Request, schema: type[BaseModel]):
        declared = request.headers.get("content-length")
        limit = self.config.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body over {limit} bytes", code="body_too_large")
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":  # a browser's "simple" POST (text/plain, forms) needs no preflight
            raise APIError(415, f"the body must be sent as application/json (got '{media_type or 'none'}')",
                           "content-type", "unsupported_media_type")  # fmt: skip
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body over {limit} bytes", code="body_too_large")
            chunks.append(chunk)
        data = _json_object(b"".join(chunks))
        try:
            body = schema.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            raise APIError(400, f"{param}: {first['msg']}", param=param, code="invalid_value") from None
        self.check_model(body.model)
        return body

    def alphas(self, body: ProxyFields) -> tuple[float, ...]:
        pairs = len(self.models.pairs)
        if body.alpha is None:
            alphas = list(self.models.alphas)
        elif isinstance(body.alpha, list):
            if len(body.alpha) != pairs:
                raise APIError(400, f"alpha: {len(body.alpha)} values for {pairs} expert pairs", "alpha")
            alphas = list(body.alpha)
        else:
            alphas = [float(body.alpha)] * pairs
        if body.experts is not None:
            chosen = set()
            for e in body.experts:
                if isinstance(e, int) and 0 <= e < pairs:
                    chosen.add(e)
                elif isinstance(e, str) and e in self.config.expert_names:
                    chosen.add(self.config.expert_names.index(e))
                else:
                    raise APIError(400, f"experts: no configured expert {e!r} (have {list(self.config.expert_names)})")
            alphas = [a if i in chosen else 0.0 for i, a in enumerate(alphas)]
        return tuple(float(a) for a in alphas)

    def sampling(self, body: ProxyFields) -> SamplingConfig:
        try:
            return SamplingConfig(temperature=body.temperature, top_k=max(body.top_k, 0), top_p=body.top_p)
        except ProxyToolError as err:
            raise APIError(400, str(err)) from None

    def changes(self, body: ProxyFields) -> ScoreChanges:
        """The request's ``logit_bias`` and penalties (ids checked against the vocabulary)."""
        bias = body.logit_bias or {}
        if any(not 0 <= t < len(self.tokenizer) for t in bias):
            raise APIError(400, f"logit_bias: token ids must be in [0, {len(self.tokenizer)})", "logit_bias")
        return ScoreChanges(tuple(sorted(bias.items())), body.presence_penalty or 0.0, body.frequency_penalty or 0.0)

    def row_seeds(self, body: ProxyFields, count: int) -> list[int]:
        """As `proxytool decode --seed S`: row i gets S * 1000003 + i (any seed when none is given), modulo
        2**64 (a generator's seed is 64 bits; torch takes a negative one modulo 2**64 too)."""
        base = body.seed * 1_000_003 if body.seed is not None else random.randrange(2**40)
        return [(base + i) % 2**64 for i in range(count)]

    async def on_worker(self, fn):
        try:
            return await asyncio.wrap_future(self.scheduler.call(fn))
        except ProxyToolError as err:  # e.g. a prompt the models' formats cannot take
            raise APIError(400, str(err)) from None
        except ShuttingDown as err:
            raise APIError(503, str(err), code="shutting_down") from None

    def contexts(self, prompt) -> list[tuple[str, int, int]]:
        """(role, the prompt's tokens as that role sees it, the role's context) for the base and each local
        model of a pair whose context is known: a request must fit them all, since a row that outgrows one
        model's context would fail every row of its batch. Runs on the worker (chat prompts are tokenized)."""
        seen = []
        for role, member in self.models.roles().items():
            source = member.source
            limit = source.max_length
            if limit is None or (role != "base" and not isinstance(source, ModelSource)):
                continue
            seen.append((role, len(source.groups[member.group].prompt_format.encode(prompt)), limit))
        return seen

    def max_tokens(self, seen: list[tuple[str, int, int]], asked: int | None, unfed: int = 0) -> int:
        """``asked`` (or all the room every model has left) after checking that the prompt and ``asked`` new
        tokens fit each context in ``seen`` (:meth:`contexts`); ``unfed``: prompt tokens that use no room."""
        room = None
        for role, size, limit in seen:
            left = limit - (size - unfed)
            if left < 0 or (asked is not None and asked > left):
                if role == "base":
                    message = f"prompt ({size} tokens) + max_tokens ({asked}) exceed the context ({limit})"
                else:
                    message = (
                        f"prompt ({size} tokens in the {role}'s format) + max_tokens ({asked}) exceed the "
                        f"{role}'s context ({limit})"
                    )
                raise APIError(400, message, "max_tokens")
            room = left if room is None else min(room, left)
        if asked is not None:
            return asked
        return room if room is not None else 256

    def bos_prompt(self, param: str) -> TokenPrompt:
        """The prompt of a request whose text has no tokens: the tokenizer's BOS alone, where it has one."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            raise APIError(400, f"{param}: no tokens in this prompt format (and the tokenizer has no BOS)", param)
        return TokenPrompt((bos,))

    # ---- running jobs --------------------------------------------------------------------------
    def jobs(self, body: ProxyFields, prompts: list, max_tokens: int, top_logprobs: int | None) -> list[Job]:
        loop = asyncio.get_running_loop()
        sampling, alphas, changes = self.sampling(body), self.alphas(body), self.changes(body)
        seeds = self.row_seeds(body, len(prompts) * body.n)
        jobs = []
        for i, prompt in enumerate(p for p in prompts for _ in range(body.n)):
            events: asyncio.Queue = asyncio.Queue()

            def emit(event, events=events):
                try:
                    loop.call_soon_threadsafe(events.put_nowait, event)
                except RuntimeError:  # the loop is gone (shutdown)
                    pass

            job = Job(
                prompt,
                max_tokens,
                emit,
                sampling=sampling,
                row_seed=seeds[i],
                alphas=alphas,
                stop=body.stops(),
                ignore_eos=body.ignore_eos,
                top_logprobs=top_logprobs,
                logprob_ids=tuple(getattr(body, "logprob_token_ids", None) or ()),
                changes=changes,
                trace=body.proxy_trace,
            )
            job.events = events
            jobs.append(job)
        return jobs

    @contextmanager
    def admission(self, request: Request, count: int):
        """Room for ``count`` rows while ``request`` is prepared (``submit`` hands it to the jobs)."""
        try:
            with self.scheduler.admission(count) as ticket:
                request.state.ticket = ticket
                yield
        except QueueFull as err:
            raise APIError(429, f"server busy: {err}; retry later", code="queue_full") from None
        except TooLarge as err:
            raise APIError(400, str(err), "n", "too_many_rows") from None

    def submit(self, request: Request, jobs: list[Job]) -> None:
        self.scheduler.submit(jobs, request.state.ticket)

    async def collect(self, job: Job) -> tuple[list[TokenEvent], DoneEvent]:
        tokens, text = [], ""
        while True:
            event = await job.events.get()
            if isinstance(event, TokenEvent):
                tokens.append(event)
                text += event.text
            elif isinstance(event, DoneEvent):
                event.text = text + event.text
                return tokens, event
            elif isinstance(event, ErrorEvent):
                raise APIError(event.status, event.message)

    async def collect_all(self, jobs: list[Job], request: Request):
        """Every job's events, or cancel them all as soon as the client goes away (checked while events
        keep coming: a request that is decoding is never idle long enough for a timeout to notice)."""
        results = asyncio.gather(*(self.collect(j) for j in jobs))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({results, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not results.done():
                results.cancel()
                raise asyncio.CancelledError
            return results.result()
        finally:
            gone.cancel()
            for job in jobs:
                job.cancelled.set()  # no-op for finished jobs; stops the rest

    # ---- token presentation --------------------------------------------------------------------
    def piece(self, token_id: int, as_ids: bool = False) -> str:
        return f"token_id:{token_id}" if as_ids else self.tokenizer.decode([token_id])

    def trace_entry(self, event: TokenEvent) -> dict:
        info = event.info
        return {
            "token_id": event.token_id,
            "token": self.piece(event.token_id),
            "logprob": info.logprob,
            "base_logprob": info.base_logprob,
            "top": [[self.piece(t), lp] for t, lp in info.top[:5]],
            "base_top": [[self.piece(t), lp] for t, lp in (info.base_top or [])],
        }

    def legacy_logprobs(self, entries: list[tuple[int, TokenInfo | None]], start: int, as_ids: bool) -> dict:
        tokens, token_logprobs, tops, offsets = [], [], [], []
        offset = start
        for token_id, info in entries:
            piece = self.piece(token_id, as_ids)
            tokens.append(piece)
            offsets.append(offset)
            offset += len(self.piece(token_id))
            token_logprobs.append(None if info is None else info.logprob)
            if info is None:
                tops.append(None)
            else:
                top: dict[str, float] = {}
                for t, lp in info.top:  # likeliest first: where ids share a text, the likeliest keeps the key
                    top.setdefault(self.piece(t, as_ids), lp)
                top.setdefault(piece, info.logprob)
                for t, lp in info.extra:
                    top.setdefault(self.piece(t, as_ids), lp)
                tops.append(top)
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}

    def chat_logprob_entry(self, event: TokenEvent) -> dict:
        def one(token_id, lp):
            piece = self.piece(token_id)
            return {"token": piece, "logprob": lp, "bytes": list(piece.encode("utf-8")), "token_id": token_id}

        entry = one(event.token_id, event.info.logprob)
        entry["top_logprobs"] = [one(t, lp) for t, lp in event.info.top]
        return entry

    # ---- /v1/completions -----------------------------------------------------------------------
    # Over 60 lines: one handler that reads as the OpenAI spec does (echo, scoring, stream, n).
    async def completions(self, body: CompletionRequest, request: Request):
        raw = body.prompt
        if isinstance(raw, str):
            raw = [raw]
        elif raw and isinstance(raw[0], int):
            raw = [raw]
        if not raw:
            raise APIError(400, "prompt: empty", "prompt")
        if body.stream and (len(raw) > 1 or body.n > 1):
            raise APIError(400, "stream: one prompt and n = 1 only", "stream")

        def encode():
            out = []
            for p in raw:
                ids = list(p) if isinstance(p, list) else self.tokenizer(p)["input_ids"]
                if not ids:
                    raise APIError(400, "prompt: no tokens", "prompt")
                self.check_ids(ids, "prompt")
                out.append(ids)
            return out, [self.contexts(TokenPrompt(tuple(i))) for i in out]

        ids, seen = await self.on_worker(encode)
        scoring = body.echo and body.logprobs is not None
        one_prefill = scoring and body.max_tokens == 1 and not (body.stream or body.proxy_trace)
        # one prefill feeds the prompt only (the new token is never fed back): a prompt of the whole context
        # fits, as lm-eval sends with max_length = context + 1
        unfed = 1 if one_prefill else 0
        max_tokens = max(self.max_tokens(s, body.max_tokens, unfed) for s in seen)
        prompts = [TokenPrompt(tuple(i)) for i in ids]
        alphas = self.alphas(body)
        echo_infos, results = None, None
        if one_prefill:
            echo_infos, results = await self.echo_and_first_token(body, prompts, alphas)  # lm-eval's requests
        elif scoring:
            echo_infos = await self.on_worker(
                lambda: prompt_token_infos(self.models, prompts, body.logprobs, alphas, body.logprob_token_ids or ())
            )
        if body.stream:
            jobs = self.jobs(body, prompts, max_tokens, body.logprobs) if max_tokens > 0 else []
            self.submit(request, jobs)
            return self.sse(self.completion_stream(body, prompts[0], jobs, echo_infos), jobs)
        if results is None and max_tokens == 0:
            results = [([], DoneEvent("length", "", 0)) for _ in range(len(prompts) * body.n)]
        elif results is None:
            jobs = self.jobs(body, prompts, max_tokens, body.logprobs)
            self.submit(request, jobs)
            results = await self.collect_all(jobs, request)
        choices = []
        for index, (tokens, done) in enumerate(results):
            p = index // body.n
            choices.append(self.completion_choice(body, index, ids[p], tokens, done, echo_infos and echo_infos[p]))
        completion_tokens = sum(done.completion_tokens for _, done in results)
        prompt_tokens = sum(len(i) for i in ids) * body.n
        return {
            "id": f"cmpl-{secrets.token_hex(12)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.config.model_name,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }

    async def echo_and_first_token(self, body: CompletionRequest, prompts: list[TokenPrompt], alphas):
        """``echo`` + ``logprobs`` + ``max_tokens: 1`` from one prefill: the prompt's log-probabilities and
        the new token both come from the scores at every prompt position (the general path prefills twice:
        once to score the prompt, once more to generate). The token is the one the general path chooses."""
        count = len(prompts) * body.n
        sampling, changes, seeds = self.sampling(body), self.changes(body), self.row_seeds(body, count)
        extra = tuple(body.logprob_token_ids or ())

        def run():
            scores = all_position_scores(self.models, prompts, alphas)
            infos = prompt_token_infos(self.models, prompts, body.logprobs, alphas, extra, scores=scores)
            firsts = first_tokens(
                self.models, scores[:, -1], body.n, sampling, seeds, top_n=body.logprobs, extra_ids=extra,
                stop=body.stops(), ignore_eos=body.ignore_eos, adjust=adjuster([changes] * count),
            )  # fmt: skip
            self.scheduler.stats.tokens_generated += len(firsts)
            self.scheduler.stats.completed += len(firsts)
            return infos, firsts

        infos, firsts = await self.on_worker(run)
        results = [([TokenEvent(f.token_id, f.text, f.info)], DoneEvent(f.finish_reason, f.text, 1)) for f in firsts]
        return infos, results

    def completion_choice(self, body, index, prompt_ids, tokens, done, echo_infos) -> dict:
        prompt_text = self.tokenizer.decode(prompt_ids) if body.echo else ""
        choice = {
            "index": index,
            "text": prompt_text + done.text,
            "logprobs": None,
            "finish_reason": done.finish_reason,
            "prompt_token_ids": prompt_ids,
            "token_ids": [t.token_id for t in tokens],
        }
        if body.logprobs is not None:
            entries = list(zip(prompt_ids, echo_infos)) if body.echo else []
            entries += [(t.token_id, t.info) for t in tokens]
            start = 0 if body.echo else len(self.tokenizer.decode(prompt_ids))
            choice["logprobs"] = self.legacy_logprobs(entries, start, body.return_tokens_as_token_ids)
        if body.proxy_trace:
            choice["proxy_trace"] = [self.trace_entry(t) for t in tokens]
        return choice

    async def completion_stream(self, body, prompt, jobs, echo_infos) -> AsyncIterator[dict]:
        cid, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())

        def chunk(text, finish=None, logprobs=None):
            c = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
            model = self.config.model_name
            return {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": [c]}

        ids = list(prompt.ids)
        if body.echo:
            lp = None
            if body.logprobs is not None:
                lp = self.legacy_logprobs(list(zip(ids, echo_infos[0])), 0, body.return_tokens_as_token_ids)
            yield chunk(self.tokenizer.decode(ids), logprobs=lp)
        completion_tokens = 0
        if not jobs:
            yield chunk("", "length")
        else:
            async for event in self.events(jobs[0]):
                if isinstance(event, TokenEvent):
                    lp = None
                    if body.logprobs is not None:
                        lp = self.legacy_logprobs([(event.token_id, event.info)], 0, body.return_tokens_as_token_ids)
                    if event.text or lp:
                        yield chunk(event.text, logprobs=lp)
                else:
                    completion_tokens = event.completion_tokens
                    yield chunk(event.text, event.finish_reason)
        if body.stream_options and body.stream_options.include_usage:
            final = chunk("")
            final["choices"] = []
            final["usage"] = _usage(len(ids), completion_tokens)
            yield final

    # ---- /v1/chat/completions ------------------------------------------------------------------
    async def chat(self, body: ChatRequest, request: Request):
        messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in body.messages]
        if body.stream and body.n > 1:
            raise APIError(400, "stream: n = 1 only", "stream")
        base = self.models.base

        def encode():
            size = len(base.source.groups[base.group].prompt_format.encode(messages))
            # no tokens (e.g. one empty message in a raw format): start from BOS, as generate() does
            prompt = messages if size else self.bos_prompt("messages")
            return prompt, size or 1, self.contexts(prompt)

        prompt, prompt_tokens, seen = await self.on_worker(encode)
        max_tokens = self.max_tokens(seen, body.limit())
        top = (body.top_logprobs or 0) if body.logprobs else None
        if body.stream:
            jobs = self.jobs(body, [prompt], max_tokens, top) if max_tokens > 0 else []
            self.submit(request, jobs)
            return self.sse(self.chat_stream(body, jobs, prompt_tokens), jobs)
        if max_tokens == 0:
            results = [([], DoneEvent("length", "", 0)) for _ in range(body.n)]
        else:
            jobs = self.jobs(body, [prompt], max_tokens, top)
            self.submit(request, jobs)
            results = await self.collect_all(jobs, request)
        choices = []
        for index, (tokens, done) in enumerate(results):
            choice = {
                "index": index,
                "message": {"role": "assistant", "content": done.text},
                "logprobs": {"content": [self.chat_logprob_entry(t) for t in tokens]} if body.logprobs else None,
                "finish_reason": done.finish_reason,
                "token_ids": [t.token_id for t in tokens],
            }
            if body.proxy_trace:
                choice["proxy_trace"] = [self.trace_entry(t) for t in tokens]
            choices.append(choice)
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.config.model_name,
            "choices": choices,
            "usage": _usage(prompt_tokens * body.n, sum(d.completion_tokens for _, d in results)),
        }

    async def chat_stream(self, body, jobs, prompt_tokens) -> AsyncIterator[dict]:
        cid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())

        def chunk(delta, finish=None, **extra):
            c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}
            kind = "chat.completion.chunk"
            return {"id": cid, "object": kind, "created": created, "model": self.config.model_name, "choices": [c]}

        yield chunk({"role": "assistant", "content": ""})
        completion_tokens = 0
        if jobs:
            async for event in self.events(jobs[0]):
                if isinstance(event, TokenEvent):
                    extra = {}
                    if body.logprobs:
                        extra["logprobs"] = {"content": [self.chat_logprob_entry(event)]}
                    if body.proxy_trace:
                        extra["proxy_trace"] = [self.trace_entry(event)]
                    if event.text or extra:
                        yield chunk({"content": event.text}, **extra)
                else:
                    completion_tokens = event.completion_tokens
                    if event.text:
                        yield chunk({"content": event.text})
                    yield chunk({}, event.finish_reason)
        else:
            yield chunk({}, "length")
        if body.stream_options and body.stream_options.include_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = _usage(prompt_tokens, completion_tokens)
            yield final

    # ---- streaming -----------------------------------------------------------------------------
    async def events(self, job: Job):
        """A job's events until it is done; cancels the job if the consumer stops early (disconnect)."""
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, ErrorEvent):
                    raise APIError(event.status, event.message)
                yield event
                if isinstance(event, DoneEvent):
                    return
        finally:
            job.cancelled.set()

    def sse(self, chunks: AsyncIterator[dict], jobs: list[Job]) -> StreamingResponse:
        async def body():
            try:
                async for c in chunks:
                    yield f"data: {json.dumps(c, ensure_ascii=False)}\n\n"
            except APIError as err:
                yield f"data: {json.dumps(err.body())}\n\n"
            finally:  # also when the client went away and the response was cancelled
                for job in jobs:
                    job.cancelled.set()
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _disconnected(request: Request, every: float = 0.2) -> None:
    """Return once the client of ``request`` has gone away."""
    while not await request.is_disconnected():
        await asyncio.sleep(every)


def _json_object(raw: bytes) -> dict:
    """The body as a JSON object of finite numbers and valid Unicode text, else a one-line 400."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
        where = _invalid_text(data)
    except RecursionError:
        raise APIError(400, "the body nests too deeply", code="invalid_json") from None
    except ValueError as err:  # also UnicodeDecodeError, and integers over Python's digit limit
        raise APIError(400, f"the body is not valid JSON: {' '.join(str(err).split())}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    if where is not None:
        param = ".".join(map(str, where))
        raise APIError(400, f"{param}: not valid Unicode text (a lone surrogate)", param, "invalid_value")
    return data


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _invalid_text(value, path: tuple = ()) -> tuple | None:
    """The path of the first string (value or key) that UTF-8 cannot encode (a lone surrogate), else None."""
    if isinstance(value, str):
        return None if value.isascii() or _encodable(value) else path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and not _encodable(key):
            return (*path, key.encode("utf-8", "replace").decode())
        found = _invalid_text(item, (*path, key))
        if found is not None:
            return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
