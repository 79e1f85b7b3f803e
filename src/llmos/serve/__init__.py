"""`llmos serve`: an OpenAI-compatible HTTP API, tokenizer and metrics routes, and a web UI.

`create_app(settings)` builds the ASGI app; `serve(settings)` runs it with uvicorn; the CLI verb
comes from `llmos.serve.cli.add_commands`. Imports are lazy so `llmos --help` stays fast.
"""

from typing import Any

__all__ = ["ServeSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "ServeSettings":
        from llmos.serve.settings import ServeSettings

        return ServeSettings
    if name == "create_app":
        from llmos.serve.app import create_app

        return create_app
    if name == "serve":
        from llmos.serve.server import serve

        return serve
    raise AttributeError(f"module 'llmos.serve' has no attribute {name!r}")
