"""Connection-level protection uvicorn lacks: a deadline for receiving the request head.

uvicorn closes idle keep-alive connections, but a client that sends its headers one byte at a
time (slow-loris) would hold a connection forever. This protocol closes any connection whose
request head has not arrived within `header_timeout` seconds of the first byte (or of accepting
the connection), while leaving running requests and streams alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    header_timeout = 10.0  # set by the server from its settings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_head():
            self._arm()  # a new request has begun arriving: its head must be complete in time
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # from here uvicorn's keep-alive timeout watches the idle connection
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()
