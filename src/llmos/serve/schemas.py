"""Request bodies of the API, as OpenAI documents them (plus a few vLLM-style sampling extras).

Strict types: `"10"` is not a number and `true` is not 1, because a client that sends them has a
bug it should hear about. Unknown fields are ignored, never rejected: clients send fields of newer
API versions (`user`, `metadata`, `store`, ...) and must keep working. Limits that depend on the
server's flags (n, max_tokens, ...) are checked in `requests.py`; the bounds here are the API's own.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
TokenIds = Annotated[list[Annotated[int, Field(ge=-(2**63), le=2**64)]], Field(max_length=1_000_000)]


class StreamOptions(Body):
    include_usage: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]


class ContentPart(Body):
    # Any part type parses; only "text" is accepted later, with a clear message for the others.
    type: str
    text: str | None = None


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class Sampling(Body):
    """Fields shared by completions and chat completions."""

    model: str
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: Probability | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    # Extras that vLLM and llama.cpp accept too.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: Probability | None = None
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    ignore_eos: bool | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool | None = None


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None


class EmbeddingRequest(Body):
    model: str
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)


class TokenizeRequest(Body):
    model: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool | None = None


class DetokenizeRequest(Body):
    model: str
    tokens: TokenIds
