"""The FastAPI application: routes, error handlers, the guard middleware, /health and /metrics.

Every error leaves the server in OpenAI's envelope with a fitting status; anything unexpected is
logged here with its traceback and answered with a generic 500 that names no file or exception.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.staticfiles import StaticFiles

from llmos import __version__
from llmos.serve import openai_routes, tokenizer_routes, ui_routes
from llmos.serve.auth import Guard
from llmos.serve.errors import APIError, error_body
from llmos.serve.registry import ModelRegistry
from llmos.serve.settings import ServeSettings
from llmos.serve.state import ServerState

log = logging.getLogger("llmos.serve")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _json_error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return _json_error(exc.status, exc.body(), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # Query and path parameters are still validated by FastAPI: answer 400 in OpenAI's shape.
    assert isinstance(exc, RequestValidationError)
    first = (exc.errors() or [{}])[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
    param = loc[0] if loc else None
    return _json_error(400, error_body(f"invalid value for {param!r}: {first.get('msg', 'invalid')}", param=param))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
    return _json_error(exc.status_code, error_body(message, "invalid_request_error", None, code), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(500, error_body("internal server error", "server_error", None, "internal_error"))


def route_table(routes: list[Any]) -> list[tuple[str, frozenset[str]]]:
    """(path, methods) of every route, routers included (static mounts as "PATH/{file}")."""
    table = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            table += route_table(inner.routes)
        elif hasattr(route, "methods"):
            table.append((route.path, frozenset(route.methods or ())))
        elif hasattr(route, "path"):
            table.append((route.path + "/{file}", frozenset({"GET"})))
    return table


def _endpoint_label(path: str, routes: set[str]) -> str:
    # A fixed label set: request paths are client-chosen and must not create new metric series.
    if path in routes:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return "/static" if path.startswith("/static/") else "other"


class Observe:
    """Counts and logs every request (one escaped line each) with its status and duration."""

    def __init__(self, app: Any, state: ServerState, routes: set[str]) -> None:
        self.app, self.state, self.routes = app, state, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        status = [500]

        async def observed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            path = scope["path"]
            endpoint = _endpoint_label(path, self.routes)
            seconds = time.monotonic() - t0
            self.state.metrics.request_done(endpoint, status[0], seconds)
            if path not in ("/health", "/metrics") or status[0] >= 400:
                log.info("%s %s %d %.3fs", scope["method"], path[:200], status[0], seconds)


def create_app(settings: ServeSettings | None = None, registry: ModelRegistry | None = None) -> Any:
    """The ASGI app for `settings` (the guard and observer middleware wrapped around FastAPI)."""
    settings = settings or ServeSettings()
    state = ServerState(settings, registry)
    app = FastAPI(title="llmos", version=__version__, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible API for llmos models, plus tokenizer, metrics and web UI routes.")
    app.state.llmos = state
    app.include_router(openai_routes.router)
    app.include_router(tokenizer_routes.router)
    app.include_router(ui_routes.router)
    app.mount("/static", StaticFiles(directory=ui_routes.STATIC), name="static")
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        text = state.metrics.render(dict(state.registry.loaded))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    routes = {path for path, _ in route_table(app.routes)}
    guarded = Guard(app, settings.api_key, loopback_only=is_loopback(settings.host))
    wrapped = Observe(guarded, state, routes)
    wrapped.fastapi = app  # type: ignore[attr-defined]  # tests and tools reach the routes through it
    wrapped.state = state  # type: ignore[attr-defined]
    return wrapped
