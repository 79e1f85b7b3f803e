"""Reading a request body: bounded in size and time, strict JSON, validated into a schema.

The body is read here rather than by the framework so that a 5 MB upload is cut off at the limit
(413) instead of buffered, a deeply nested document fails as a 400 instead of a RecursionError,
and validation problems come back in OpenAI's error shape instead of a 422 `{"detail": ...}`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from llmos.serve.errors import BadRequest, PayloadTooLarge

T = TypeVar("T", bound=BaseModel)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told otherwise.
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, max_bytes: int, timeout: float) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise BadRequest(f"Content-Type must be application/json, not {ctype[:60]!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(f"request body not received within {timeout:.0f}s", code="body_timeout") from None
    try:
        text = b"".join(chunks).decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError as e:
        raise BadRequest(f"request body is not valid JSON: {str(e)[:120]}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(data).__name__}")
    return data


def validate(schema: type[T], data: dict[str, Any]) -> T:
    try:
        return schema.model_validate(data)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        loc = [str(p) for p in first["loc"]]
        param = loc[0] if loc else None  # the top-level field, as OpenAI reports it
        where = ".".join(loc)
        if first["type"] == "missing":
            message = f"missing required field {where!r}"
        else:
            # Unions report one error per alternative; the first one names the field well enough.
            message = f"invalid value for {where!r}: {first['msg']}"
        raise BadRequest(message, param=param) from None


async def parse(request: Request, schema: type[T], max_bytes: int, timeout: float) -> T:
    return validate(schema, await read_json(request, max_bytes, timeout))
