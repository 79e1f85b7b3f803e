"""Starting the server: check the models, load the first one, bind the socket, run uvicorn."""

from __future__ import annotations

import logging
import socket
import sys

from llmos.serve.app import create_app, is_loopback
from llmos.serve.http_guard import GuardedH11Protocol
from llmos.serve.log_format import setup_logging
from llmos.serve.registry import ModelRegistry
from llmos.serve.settings import ServeSettings

log = logging.getLogger("llmos.serve")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: ServeSettings, log_level: str = "info") -> int:
    """Run until interrupted; returns the exit code."""
    import uvicorn

    from llmos.library import resolve

    setup_logging(getattr(logging, log_level.upper(), logging.INFO))
    registry = ModelRegistry(settings)
    for target in registry.configured.values():
        resolve(target)  # a typo in --model fails now, not on the first request (NotFoundError)
    names = registry.names()
    if not names:
        log.warning("no models to serve: the library is empty; try `llmos pull smollm2:135m-instruct`")
    elif settings.preload:
        registry.load_now(names[0])
    if not is_loopback(settings.host) and not settings.api_key:
        log.warning("listening on %s without an API key: anyone who can reach it can use it", settings.host)
    sock = bind(settings.host, settings.port)
    app = create_app(settings, registry)
    protocol = type("ServeProtocol", (GuardedH11Protocol,), {"header_timeout": settings.header_timeout})
    config = uvicorn.Config(app, log_config=None, access_log=False, http=protocol, lifespan="off",
                            timeout_keep_alive=5, timeout_graceful_shutdown=5,
                            limit_concurrency=settings.max_in_flight * 4 + 64,
                            h11_max_incomplete_event_size=64 * 1024)
    url = url_of(sock)
    print(f"llmos serve: web UI at {url}/  OpenAI API at {url}/v1  (models: {', '.join(names) or 'none'})",
          flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        registry.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(ServeSettings()))
