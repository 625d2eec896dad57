"""The OpenAI-compatible request bodies (plus proxytool's extra fields) and the error shape.

Unknown fields are accepted and ignored, as vLLM does, so clients that send newer OpenAI fields work.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxytool.decoding import checks
from proxytool.errors import ProxyToolError
from proxytool.serving.logprobs import MAX_TOP_LOGPROBS

SEED_RANGE = (-(2**63), 2**63 - 1)  # signed 64 bits, as vLLM and torch take them


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def type(self) -> str:
        return {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            413: "invalid_request_error",
            415: "invalid_request_error",
            429: "rate_limit_error",
        }.get(self.status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ProxyFields(BaseModel):
    """Fields every generation request shares, including proxytool's extras."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # optional, as in vLLM: the served model
    max_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0, le=2)  # OpenAI's default
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)  # vLLM's extra (-1 or 0 = off)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # proxytool's extras
    alpha: float | list[float] | None = Field(
        None, description="Steering weight: one for every expert pair, or a list with one per pair."
    )
    experts: list[str | int] | None = Field(
        None, description="Steer with only these configured experts (names or 0-based positions); others get α 0."
    )
    logit_bias: dict[int, float] | None = Field(
        None, description="Token id (a JSON key) -> a number in [-100, 100] added to the steered scores."
    )
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    ignore_eos: bool = False  # vLLM's extra: run to max_tokens (benchmarks)
    proxy_trace: bool = Field(False, description="Per token, the base's and the proxy's log-probabilities.")

    @field_validator("alpha")
    @classmethod
    def _finite_alpha(cls, alpha):
        values = alpha if isinstance(alpha, list) else [] if alpha is None else [alpha]
        try:
            for value in values:
                checks.alpha("alpha", value)  # the CLI's check: finite, within ±MAX_ALPHA
        except ProxyToolError as err:
            raise ValueError(str(err)) from None
        return alpha

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, bias):
        for token, value in (bias or {}).items():
            if not -100 <= value <= 100:
                raise ValueError(f"token {token}: the bias must be in [-100, 100] (got {value})")
        return bias

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(ProxyFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)  # the legacy endpoint's default
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)  # at most ServerConfig.max_logprobs (checked by the app)
    return_tokens_as_token_ids: bool = False  # vLLM's convention: tokens and top keys as "token_id:123"
    logprob_token_ids: list[int] | None = Field(
        None, description="With logprobs: also these ids' log-probabilities at every position, whatever their rank."
    )
    best_of: int | None = None  # not supported: None (or 1, the same thing) only
    suffix: str | None = None  # not supported: None (or "") only

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, best_of):
        if best_of not in (None, 1):
            raise ValueError("not supported (ask for n choices instead)")
        return best_of

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix):
        if suffix:
            raise ValueError("not supported (no insertion; completions continue the prompt)")
        return suffix


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = ""

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, content):
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise ValueError("each content part must be an object such as {'type': 'text', 'text': '...'}")
                if part.get("type") == "text" and not isinstance(part.get("text"), str):
                    raise ValueError("a text part needs 'text' as a string")
        return content

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(ProxyFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TokenizeRequest(BaseModel):
    """vLLM's ``POST /tokenize``: clients (a remote base, lm-eval's remote tokenizer) use the server's tokenizer."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True


class DetokenizeRequest(BaseModel):
    """vLLM's ``POST /detokenize``: ``{"tokens": [ids]}`` → ``{"prompt": text}``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[int]
