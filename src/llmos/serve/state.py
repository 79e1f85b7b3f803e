"""What every route shares: settings, the model registry, metrics, and request admission.

Admission is counted per HTTP request: at most `max_concurrency` run and `max_queue` wait; the
next one gets 429 with Retry-After at once, before any work is done for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from llmos.serve.errors import Overloaded, error_body
from llmos.serve.metrics import Metrics
from llmos.serve.registry import ModelRegistry, ServedModel
from llmos.serve.settings import ServeSettings

log = logging.getLogger("llmos.serve")


class ServerState:
    def __init__(self, settings: ServeSettings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings)
        self.metrics = Metrics()
        self.started = int(time.time())


def server_state(request: Request) -> ServerState:
    return request.app.state.llmos


class Lease:
    """One admitted request: an in-flight slot and, once looked up, a busy model. `close` is
    idempotent and is called when the response (or stream) has ended, however it ended."""

    def __init__(self, state: ServerState) -> None:
        if state.metrics.in_flight >= state.settings.max_in_flight:
            raise Overloaded(f"the server is at its limit of {state.settings.max_in_flight} requests "
                             "in flight; retry shortly")
        self.state = state
        state.metrics.in_flight += 1
        self.served: ServedModel | None = None
        self.started = time.monotonic()
        self.closed = False
        self.on_close: list[Callable[[], None]] = []

    async def model(self, name: Any) -> ServedModel:
        self.served = await self.state.registry.acquire(name)
        return self.served

    def remaining(self) -> float:
        return max(0.0, self.state.settings.request_timeout - (time.monotonic() - self.started))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for hook in self.on_close:
            hook()
        self.state.metrics.in_flight -= 1
        if self.served is not None:
            self.state.registry.release(self.served)


def log_prompt(state: ServerState, endpoint: str, model: Any, prompt: Any) -> None:
    """With --log-prompts: one record per request (the formatter escapes control characters)."""
    if state.settings.log_prompts:
        text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, default=str)
        log.info("%s model=%s prompt=%s", endpoint, str(model)[:80], text[:300])


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


async def _guarded(content: AsyncIterator[str]) -> AsyncIterator[str]:
    """Any unexpected failure inside a stream still ends it properly: an error event, then [DONE]."""
    try:
        async for chunk in content:
            yield chunk
    except Exception:
        log.exception("error while streaming a response")
        yield sse(error_body("internal server error", "server_error", None, "internal_error"))
        yield SSE_DONE


class LeasedStream(StreamingResponse):
    """An SSE response that closes its lease when the stream ends, is cancelled by a disconnect,
    or never starts at all (a generator that never ran would never run its own `finally`)."""

    def __init__(self, content: AsyncIterator[str], lease: Lease) -> None:
        super().__init__(_guarded(content), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.lease = lease

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.lease.close()  # first: it is synchronous, so a second cancellation cannot skip it
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):  # already finished or failed: nothing to close
                    await close()
