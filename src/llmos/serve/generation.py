"""Running a request's choices on a model's engine and reading their events back.

All choices are submitted before anything is sent to the client, so that every submission error
(context length, vocabulary, full queue) is still a plain HTTP error. Events of several choices
are merged into one stream in arrival order. Whoever stops reading (a disconnect, a timeout, an
error) cancels every engine request still running: no slot stays busy for a client that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from llmos.model import ContextLengthError
from llmos.serve.errors import BadRequest, ContextLengthExceeded, Overloaded
from llmos.serve.logprobs import TokenLogprob


@dataclass
class Choice:
    """What one choice has produced so far."""

    index: int
    request: Any  # llmos.engine.engine.Request
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.request.output_ids)


def submit(engine: Any, prompt_ids: list[int], params: Any, param: str) -> Any:
    from llmos.engine.engine import QueueFullError

    try:
        return engine.submit(prompt_ids, params, loop=asyncio.get_running_loop())
    except ContextLengthError as e:
        raise ContextLengthExceeded(str(e), param=param) from None
    except QueueFullError:
        raise Overloaded("the model's queue is full; retry shortly") from None
    except ValueError as e:
        raise BadRequest(str(e), param=param, code="out_of_vocabulary" if "vocabulary" in str(e) else None) \
            from None


def cancel_all(choices: list[Choice]) -> None:
    for choice in choices:
        choice.request.cancel()


async def events(choices: list[Choice], hidden_ids: frozenset[int], metrics: Any = None
                 ) -> AsyncIterator[tuple[Choice, Any]]:
    """(choice, engine event) in arrival order until every choice has finished. Updates each
    choice's text, logprobs and finish reason as it goes; cancels the rest if abandoned."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        async for event in choice.request:
            queue.put_nowait((choice, event))

    tasks = [asyncio.create_task(pump(c)) for c in choices]
    remaining = len(choices)
    try:
        while remaining:
            choice, event = await queue.get()
            if event.token_id is not None:
                if metrics is not None:
                    metrics.token_generated(choice.request)
                if event.logprob is not None and event.token_id not in hidden_ids:
                    choice.logprobs.append(TokenLogprob(event.token_id, event.logprob, event.top_logprobs))
            if event.text:
                choice.text.append(event.text)
            if event.finish_reason is not None:
                remaining -= 1
                choice.finish_reason = event.finish_reason
                choice.error = event.error
            yield choice, event
    finally:
        cancel_all(choices)
        for task in tasks:
            task.cancel()


async def until_disconnected(receive: Any) -> None:
    """Return when the client goes away (the body has been read, so only a disconnect can come)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def collect(choices: list[Choice], hidden_ids: frozenset[int], receive: Any, metrics: Any = None) -> bool:
    """Run every choice to its end; False if the client disconnected first (all cancelled then)."""

    async def drain() -> None:
        async for _ in events(choices, hidden_ids, metrics):
            pass

    work = asyncio.create_task(drain())
    watch = asyncio.create_task(until_disconnected(receive))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            work.result()
            return True
        return False
    finally:
        for task in (work, watch):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        cancel_all(choices)


def ttft(request: Any) -> float | None:
    if request.first_token_at is None:
        return None
    return request.first_token_at - request.submitted


def now() -> int:
    return int(time.time())
