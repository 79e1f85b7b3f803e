"""The OpenAI-compatible API: /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings.

Responses follow OpenAI's shapes closely enough that the official client, LangChain and
lm-eval-harness work unchanged: streamed chat starts with the assistant role, every chunk's
choices carry a `delta`, `finish_reason` appears once per choice, the usage chunk has
`choices: []`, and the stream ends with `data: [DONE]` (after an `{"error": ...}` event if
generation fails midway).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmos.serve import generation as gen
from llmos.serve.body import parse
from llmos.serve.errors import (
    BadRequest,
    ContextLengthExceeded,
    RequestTimeout,
    ServerError,
    error_body,
)
from llmos.serve.json_constraint import JsonObjectProcessor
from llmos.serve.logprobs import TokenStrings, chat_logprobs, completion_logprobs, compute_prompt_logprobs
from llmos.serve.prompts import check_length, encode_chat, encode_prompt, split_prompts
from llmos.serve.registry import ServedModel
from llmos.serve.sampling_args import check_max_tokens, check_n, choice_params, sampling_kwargs
from llmos.serve.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from llmos.serve.state import SSE_DONE, Lease, LeasedStream, ServerState, log_prompt, server_state, sse

log = logging.getLogger("llmos.serve")
router = APIRouter()

GENERIC_ENGINE_ERROR = "the model failed while generating this response; see the server log"


def _schema(model: type) -> dict[str, Any]:
    # The body is parsed by body.parse (size limits, OpenAI-shaped errors), so the schema is only
    # declared for the OpenAPI document, where clients and the fuzz tests read it.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema(
        ref_template="#/components/schemas/{model}")}}}}


def _model_card(name: str, state: ServerState) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": state.started, "owned_by": "llmos"}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = server_state(request)
    names = await asyncio.to_thread(state.registry.names)
    return {"object": "list", "data": [_model_card(n, state) for n in names]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> dict[str, Any]:
    state = server_state(request)
    name, _ = state.registry.target(model)
    return _model_card(name, state)


def _usage(prompt_tokens: int, choices: list[gen.Choice]) -> dict[str, int]:
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _finish(reason: str | None) -> str:
    # "cancelled" only happens when the client has gone; never shown, but keep it in OpenAI's set.
    return reason if reason in ("stop", "length") else "stop"


def _hidden_ids(served: ServedModel, params: Any) -> frozenset[int]:
    """Tokens that end a sequence: generated and counted, but not part of the text or its logprobs."""
    return frozenset(served.tokenizer.eos_ids) | frozenset(params.stop_token_ids)


async def _on_engine(served: ServedModel, fn: Any) -> Any:
    """Run tensor work on the model's engine thread (never on the event loop or a request thread)."""
    return await asyncio.wrap_future(served.engine.call(fn))


def _error_event(message: str, type_: str = "server_error", code: str | None = "internal_error") -> str:
    return sse(error_body(message, type_, None, code))


# -- /v1/completions ------------------------------------------------------------------------------
@router.post("/v1/completions", openapi_extra=_schema(CompletionRequest))
async def completions(request: Request) -> Response:
    state = server_state(request)
    s = state.settings
    body = await parse(request, CompletionRequest, s.max_body_bytes, s.body_timeout)
    log_prompt(state, "completions", body.model, body.prompt)
    n = check_n(body, s)
    echo = bool(body.echo)
    max_tokens = check_max_tokens(body.max_tokens, "max_tokens", s, allow_zero=echo)
    max_tokens = 16 if max_tokens is None else max_tokens  # OpenAI's default for completions
    prompts = split_prompts(body.prompt, "prompt", s.max_prompts)
    if len(prompts) * n > s.max_prompts:
        raise BadRequest(f"{len(prompts)} prompts x n={n} is above this server's limit of {s.max_prompts} "
                         "sequences per request", param="n")
    lease = Lease(state)
    try:
        served = await lease.model(body.model)
        tokenizer = served.tokenizer
        ids_list = await asyncio.to_thread(
            lambda: [encode_prompt(tokenizer, served.vocab_size, p, "prompt") for p in prompts])
        for ids in ids_list:
            check_length(len(ids), max_tokens, served.context_length, "prompt")
        kwargs = sampling_kwargs(body, served.vocab_size, s, max_tokens, body.logprobs)
        params = [choice_params(served, kwargs, body.seed, k) for k in range(len(prompts) * n)]
        texts = [p if isinstance(p, str) else tokenizer.decode(ids) for p, ids in zip(prompts, ids_list)]
        prompt_lp: list[Any] = [None] * len(prompts)
        if echo and body.logprobs is not None:
            prompt_lp = [await _on_engine(served, lambda ids=ids: compute_prompt_logprobs(
                served.model, ids, body.logprobs or 0)) for ids in ids_list]
        choices: list[gen.Choice] = []
        lease.on_close.append(lambda: gen.cancel_all(choices))
        if max_tokens > 0:
            for k, param in enumerate(params):
                choices.append(gen.Choice(k, gen.submit(served.engine, ids_list[k // n], param, "prompt")))
        prompt_tokens = sum(len(ids) for ids in ids_list)
        job = _CompletionJob(state, served, body, n, echo, texts, prompt_lp, choices, prompt_tokens,
                             _hidden_ids(served, params[0]))
        if body.stream:
            return LeasedStream(job.stream(lease), lease)
        try:
            return await job.respond(request, lease)
        finally:
            lease.close()
    except BaseException:
        lease.close()
        raise


class _CompletionJob:
    def __init__(self, state: ServerState, served: ServedModel, body: CompletionRequest, n: int, echo: bool,
                 texts: list[str], prompt_lp: list[Any], choices: list[gen.Choice], prompt_tokens: int,
                 hidden: frozenset[int]) -> None:
        self.state, self.served, self.body, self.n, self.echo = state, served, body, n, echo
        self.texts, self.prompt_lp, self.choices = texts, prompt_lp, choices
        self.prompt_tokens, self.hidden = prompt_tokens, hidden
        self.strings = TokenStrings.of(served.tokenizer)
        self.id = f"cmpl-{secrets.token_hex(12)}"
        self.created = gen.now()
        self.count = len(texts) * n

    def _prompt_of(self, index: int) -> int:
        return index // self.n

    def _logprobs(self, index: int, entries: list[Any]) -> dict[str, Any] | None:
        """Legacy logprobs of one choice: the prompt's first when echoing, then the generated tokens'."""
        if self.body.logprobs is None:
            return None
        p = self._prompt_of(index)
        lp = completion_logprobs(self.strings, self.prompt_lp[p] or []) if self.echo else \
            completion_logprobs(self.strings, [])
        generated = completion_logprobs(self.strings, entries, len(self.texts[p]) if self.echo else 0)
        return {key: lp[key] + generated[key] for key in lp}

    async def respond(self, request: Request, lease: Lease) -> Response:
        try:
            async with asyncio.timeout(lease.remaining()):
                finished = await gen.collect(self.choices, self.hidden, request.receive, self.state.metrics)
        except TimeoutError:
            raise RequestTimeout(f"the request took longer than {self.state.settings.request_timeout:.0f}s") \
                from None
        if not finished:
            return Response(status_code=499)  # the client is gone; nobody reads this
        if any(c.finish_reason == "error" for c in self.choices):
            self.served.failed = True
            log.error("engine error for %s: %s", self.served.name,
                      next(c.error for c in self.choices if c.finish_reason == "error"))
            raise ServerError(GENERIC_ENGINE_ERROR)
        out = []
        for index in range(self.count):
            choice = self.choices[index] if self.choices else None
            text = "".join(choice.text) if choice else ""
            prefix = self.texts[self._prompt_of(index)] if self.echo else ""
            out.append({"index": index, "text": prefix + text,
                        "logprobs": self._logprobs(index, choice.logprobs if choice else []),
                        "finish_reason": _finish(choice.finish_reason) if choice else "length"})
        usage = _usage(self.prompt_tokens, self.choices)
        self.state.metrics.usage(usage["prompt_tokens"], usage["completion_tokens"])
        return JSONResponse({"id": self.id, "object": "text_completion", "created": self.created,
                             "model": self.served.name, "choices": out, "usage": usage})

    def _chunk(self, index: int, text: str, logprobs: Any, finish: str | None) -> str:
        chunk: dict[str, Any] = {"id": self.id, "object": "text_completion", "created": self.created,
                                 "model": self.served.name,
                                 "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                              "finish_reason": finish}]}
        if self._usage_wanted:
            chunk["usage"] = None
        return sse(chunk)

    @property
    def _usage_wanted(self) -> bool:
        return bool(self.body.stream_options and self.body.stream_options.include_usage)

    async def stream(self, lease: Lease) -> AsyncIterator[str]:
        if self.echo:
            for index in range(self.count):
                p = self._prompt_of(index)
                lp = completion_logprobs(self.strings, self.prompt_lp[p]) if self.prompt_lp[p] else None
                if self.body.logprobs is not None and lp is None:
                    lp = completion_logprobs(self.strings, [])
                yield self._chunk(index, self.texts[p], lp, None if self.choices else "length")
        try:
            async with asyncio.timeout(lease.remaining()):
                async for choice, event in gen.events(self.choices, self.hidden, self.state.metrics):
                    if event.finish_reason == "error":
                        self.served.failed = True
                        log.error("engine error for %s: %s", self.served.name, event.error)
                        yield _error_event(GENERIC_ENGINE_ERROR)
                        yield SSE_DONE
                        return
                    lp = None
                    if self.body.logprobs is not None:
                        fresh = choice.logprobs[-1:] if event.token_id is not None and choice.logprobs and \
                            choice.logprobs[-1].token_id == event.token_id else []
                        lp = completion_logprobs(self.strings, fresh)
                    finish = _finish(event.finish_reason) if event.finish_reason else None
                    if event.text or finish or (lp and lp["tokens"]):
                        yield self._chunk(choice.index, event.text, lp, finish)
        except TimeoutError:
            yield _error_event(f"the request took longer than {self.state.settings.request_timeout:.0f}s",
                               "timeout_error", "request_timeout")
            yield SSE_DONE
            return
        usage = _usage(self.prompt_tokens, self.choices)
        self.state.metrics.usage(usage["prompt_tokens"], usage["completion_tokens"])
        if self._usage_wanted:
            yield sse({"id": self.id, "object": "text_completion", "created": self.created,
                       "model": self.served.name, "choices": [], "usage": usage})
        yield SSE_DONE


# -- /v1/chat/completions -------------------------------------------------------------------------
@router.post("/v1/chat/completions", openapi_extra=_schema(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    state = server_state(request)
    s = state.settings
    body = await parse(request, ChatCompletionRequest, s.max_body_bytes, s.body_timeout)
    log_prompt(state, "chat", body.model, [m.model_dump(exclude_none=True) for m in body.messages])
    n = check_n(body, s)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    requested = check_max_tokens(requested, param, s, allow_zero=False)
    if body.top_logprobs is not None and not body.logprobs:
        raise BadRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    fmt = body.response_format.type if body.response_format else "text"
    if fmt == "json_schema":
        raise BadRequest("response_format json_schema is not supported; use {\"type\": \"json_object\"}",
                         param="response_format")
    lease = Lease(state)
    try:
        served = await lease.model(body.model)
        prompt_ids = await asyncio.to_thread(encode_chat, served.tokenizer, body.messages)
        context = served.context_length
        if len(prompt_ids) >= context:
            check_length(len(prompt_ids), 0, context, "messages")
        max_tokens = requested if requested is not None else min(s.default_max_tokens, context - len(prompt_ids))
        check_length(len(prompt_ids), max_tokens, context, "messages")
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        kwargs = sampling_kwargs(body, served.vocab_size, s, max_tokens, logprobs)
        params = [choice_params(served, kwargs, body.seed, k) for k in range(n)]
        if fmt == "json_object":
            eos = frozenset(served.tokenizer.eos_ids)
            if not eos:
                raise BadRequest(f"model {served.name} has no end-of-sequence token, so json_object output "
                                 "cannot be enforced", param="response_format")
            for p in params:
                p.logits_processors.append(JsonObjectProcessor(served.tokenizer, eos, p.greedy))
        choices: list[gen.Choice] = []
        lease.on_close.append(lambda: gen.cancel_all(choices))
        for k, p in enumerate(params):
            choices.append(gen.Choice(k, gen.submit(served.engine, prompt_ids, p, "messages")))
        job = _ChatJob(state, served, body, choices, len(prompt_ids), _hidden_ids(served, params[0]))
        if body.stream:
            return LeasedStream(job.stream(lease), lease)
        try:
            return await job.respond(request, lease)
        finally:
            lease.close()
    except BaseException:
        lease.close()
        raise


class _ChatJob:
    def __init__(self, state: ServerState, served: ServedModel, body: ChatCompletionRequest,
                 choices: list[gen.Choice], prompt_tokens: int, hidden: frozenset[int]) -> None:
        self.state, self.served, self.body, self.choices = state, served, body, choices
        self.prompt_tokens, self.hidden = prompt_tokens, hidden
        self.strings = TokenStrings.of(served.tokenizer)
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = gen.now()
        self.usage_wanted = bool(body.stream_options and body.stream_options.include_usage)

    async def respond(self, request: Request, lease: Lease) -> Response:
        try:
            async with asyncio.timeout(lease.remaining()):
                finished = await gen.collect(self.choices, self.hidden, request.receive, self.state.metrics)
        except TimeoutError:
            raise RequestTimeout(f"the request took longer than {self.state.settings.request_timeout:.0f}s") \
                from None
        if not finished:
            return Response(status_code=499)
        if any(c.finish_reason == "error" for c in self.choices):
            self.served.failed = True
            log.error("engine error for %s: %s", self.served.name,
                      next(c.error for c in self.choices if c.finish_reason == "error"))
            raise ServerError(GENERIC_ENGINE_ERROR)
        out = []
        for c in self.choices:
            logprobs = {"content": chat_logprobs(self.strings, c.logprobs), "refusal": None} \
                if self.body.logprobs else None
            out.append({"index": c.index, "message": {"role": "assistant", "content": "".join(c.text),
                                                      "refusal": None},
                        "logprobs": logprobs, "finish_reason": _finish(c.finish_reason)})
        usage = _usage(self.prompt_tokens, self.choices)
        self.state.metrics.usage(usage["prompt_tokens"], usage["completion_tokens"])
        return JSONResponse({"id": self.id, "object": "chat.completion", "created": self.created,
                             "model": self.served.name, "system_fingerprint": None, "choices": out,
                             "usage": usage})

    def _chunk(self, index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> str:
        chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.served.name, "system_fingerprint": None,
                                 "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                              "finish_reason": finish}]}
        if self.usage_wanted:
            chunk["usage"] = None
        return sse(chunk)

    async def stream(self, lease: Lease) -> AsyncIterator[str]:
        for c in self.choices:
            yield self._chunk(c.index, {"role": "assistant", "content": ""})
        try:
            async with asyncio.timeout(lease.remaining()):
                async for choice, event in gen.events(self.choices, self.hidden, self.state.metrics):
                    if event.finish_reason == "error":
                        self.served.failed = True
                        log.error("engine error for %s: %s", self.served.name, event.error)
                        yield _error_event(GENERIC_ENGINE_ERROR)
                        yield SSE_DONE
                        return
                    logprobs = None
                    if self.body.logprobs and event.token_id is not None and choice.logprobs and \
                            choice.logprobs[-1].token_id == event.token_id and event.token_id not in self.hidden:
                        logprobs = {"content": chat_logprobs(self.strings, choice.logprobs[-1:]), "refusal": None}
                    if event.text or logprobs:
                        yield self._chunk(choice.index, {"content": event.text}, logprobs)
                    if event.finish_reason:
                        yield self._chunk(choice.index, {}, None, _finish(event.finish_reason))
        except TimeoutError:
            yield _error_event(f"the request took longer than {self.state.settings.request_timeout:.0f}s",
                               "timeout_error", "request_timeout")
            yield SSE_DONE
            return
        usage = _usage(self.prompt_tokens, self.choices)
        self.state.metrics.usage(usage["prompt_tokens"], usage["completion_tokens"])
        if self.usage_wanted:
            yield sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.served.name, "system_fingerprint": None, "choices": [], "usage": usage})
        yield SSE_DONE


# -- /v1/embeddings -------------------------------------------------------------------------------
MAX_EMBEDDING_TOKENS = 16384  # per request: the forward passes hold up every other request meanwhile


def mean_pooled(model: Any, batch: list[list[int]]) -> list[list[float]]:
    """The mean over positions of the final (normed) hidden states, one vector per input.
    Runs on the engine thread."""
    import torch

    with torch.inference_mode():
        return [model(torch.tensor([ids]), return_hidden=True)[0].float().mean(dim=0).tolist() for ids in batch]


@router.post("/v1/embeddings", openapi_extra=_schema(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    """Embeddings are the mean-pooled final hidden states of the language model (after its last
    norm): not a trained sentence-embedding model, but useful for similarity and clustering."""
    state = server_state(request)
    s = state.settings
    body = await parse(request, EmbeddingRequest, s.max_body_bytes, s.body_timeout)
    inputs = split_prompts(body.input, "input", s.max_prompts)
    lease = Lease(state)
    try:
        served = await lease.model(body.model)
        hidden = served.model.config.n_embd
        if body.dimensions is not None and body.dimensions != hidden:
            raise BadRequest(f"dimensions={body.dimensions}: this model's embeddings have {hidden} dimensions",
                             param="dimensions")
        batch = await asyncio.to_thread(
            lambda: [encode_prompt(served.tokenizer, served.vocab_size, p, "input") for p in inputs])
        for ids in batch:
            if len(ids) > served.context_length:
                raise ContextLengthExceeded(f"input is too long: {len(ids)} tokens, the model's context length "
                                            f"is {served.context_length} tokens", param="input")
        total = sum(len(ids) for ids in batch)
        if total > MAX_EMBEDDING_TOKENS:
            raise BadRequest(f"input holds {total} tokens in all; the limit is {MAX_EMBEDDING_TOKENS}",
                             param="input")
        vectors = await _on_engine(served, lambda: mean_pooled(served.model, batch))
        data = []
        for i, vec in enumerate(vectors):
            if body.encoding_format == "base64":
                import numpy as np

                value: Any = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
            else:
                value = vec
            data.append({"object": "embedding", "index": i, "embedding": value})
        state.metrics.usage(total, 0)
        return JSONResponse({"object": "list", "data": data, "model": served.name,
                             "usage": {"prompt_tokens": total, "total_tokens": total}})
    finally:
        lease.close()

