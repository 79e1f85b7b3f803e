"""Tokenizer endpoints at the server root (as vLLM and llama.cpp serve them): /tokenize,
/detokenize and /tokenizer_info, so clients can count and inspect tokens exactly as the model sees them."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from llmos.errors import LlmosError
from llmos.serve.body import parse
from llmos.serve.errors import BadRequest
from llmos.serve.openai_routes import _schema
from llmos.serve.prompts import encode_chat
from llmos.serve.schemas import DetokenizeRequest, TokenizeRequest
from llmos.serve.state import Lease, server_state

router = APIRouter()


@router.post("/tokenize", openapi_extra=_schema(TokenizeRequest))
async def tokenize(request: Request) -> dict[str, Any]:
    state = server_state(request)
    s = state.settings
    body = await parse(request, TokenizeRequest, s.max_body_bytes, s.body_timeout)
    if (body.prompt is None) == (body.messages is None):
        raise BadRequest("give exactly one of prompt or messages", param="prompt")
    lease = Lease(state)
    try:
        served = await lease.model(body.model)
        tokenizer = served.tokenizer
        if body.messages is not None:
            add_prompt = True if body.add_generation_prompt is None else body.add_generation_prompt
            ids = await asyncio.to_thread(encode_chat, tokenizer, body.messages, add_prompt)
        else:
            add = True if body.add_special_tokens is None else body.add_special_tokens
            text = body.prompt or ""
            try:
                ids = await asyncio.to_thread(tokenizer.encode, text, add)
            except LlmosError as e:
                raise BadRequest(str(e), param="prompt") from None
        return {"tokens": ids, "count": len(ids), "max_model_len": served.context_length}
    finally:
        lease.close()


@router.post("/detokenize", openapi_extra=_schema(DetokenizeRequest))
async def detokenize(request: Request) -> dict[str, Any]:
    state = server_state(request)
    s = state.settings
    body = await parse(request, DetokenizeRequest, s.max_body_bytes, s.body_timeout)
    lease = Lease(state)
    try:
        served = await lease.model(body.model)
        vocab = served.tokenizer.vocab_size
        bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise BadRequest(f"token id {bad} is out of vocabulary (vocab size {vocab})", param="tokens",
                             code="out_of_vocabulary")
        return {"prompt": served.tokenizer.decode(body.tokens)}
    finally:
        lease.close()


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request, model: str | None = None) -> dict[str, Any]:
    state = server_state(request)
    if model is None:
        names = await asyncio.to_thread(state.registry.names)
        if not names:
            raise BadRequest("no model is served; name one with ?model=", param="model")
        model = names[0]
    lease = Lease(state)
    try:
        served = await lease.model(model)
        t = served.tokenizer
        return {"model": served.name, "vocab_size": t.vocab_size, "model_vocab_size": served.vocab_size,
                "bos_token": t.bos_token, "bos_token_id": t.bos_id, "eos_token": t.eos_token,
                "eos_token_id": t.eos_id, "eos_token_ids": sorted(t.eos_ids), "pad_token": t.pad_token,
                "add_bos_token": t.add_bos_token, "chat_template": t.chat_template,
                "max_model_len": served.context_length}
    finally:
        lease.close()
