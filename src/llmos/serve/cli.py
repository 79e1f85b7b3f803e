"""`llmos serve`: flags named as vLLM, llama.cpp and Ollama users expect them."""

from __future__ import annotations

import argparse
import os

from llmos.errors import ConfigError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "serve", help="serve models over an OpenAI-compatible API with a web UI",
        description="Serve library models over an OpenAI-compatible HTTP API (/v1), with a web UI at /. "
                    "Without a model, every model in the library is served, each loaded on first use.")
    s.add_argument("models", nargs="*", metavar="MODEL", help="library name[:tag], or ALIAS=name-or-path")
    s.add_argument("--model", "-m", action="append", default=[], dest="extra_models", metavar="MODEL",
                   help="another model to serve (repeatable)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (0: any free port; the URL is printed)")
    s.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health and the UI "
                        "(default: $LLMOS_API_KEY)")
    s.add_argument("--pull", action="store_true", help="pull library models that are not there yet")
    s.add_argument("--max-concurrency", type=int, default=16, help="sequences each model decodes at once")
    s.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more get 429")
    s.add_argument("--context-length", type=int, default=4096, help="token cap per sequence (prompt + output)")
    s.add_argument("--max-tokens", type=int, default=4096, help="largest max_tokens a request may ask for")
    s.add_argument("--max-n", type=int, default=8, help="largest n (choices per request)")
    s.add_argument("--max-body-mb", type=float, default=2.0, help="largest request body (MB)")
    s.add_argument("--request-timeout", type=float, default=600.0, help="seconds one request may take")
    s.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client may take to send its request headers (slow-loris guard)")
    s.add_argument("--memory-budget-gb", type=float, default=8.0,
                   help="memory for loaded models; least recently used ones are unloaded above it")
    s.add_argument("--threads", type=int, help="CPU threads for each model's compute")
    s.add_argument("--no-preload", action="store_true", help="load even the first model on first use")
    s.add_argument("--log-prompts", action="store_true", help="log prompts (escaped and cut); off by default")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)


def settings_from_args(args: argparse.Namespace) -> object:
    from llmos.serve.settings import ServeSettings

    for flag in ("max_concurrency", "max_queue", "context_length", "max_tokens", "max_n"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    for flag in ("max_body_mb", "request_timeout", "memory_budget_gb", "header_timeout"):
        if not getattr(args, flag) > 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number")
    key = args.api_key if args.api_key is not None else os.environ.get("LLMOS_API_KEY")
    return ServeSettings(
        models=list(args.models) + list(args.extra_models), host=args.host, port=args.port,
        api_key=key or None, memory_budget_gb=args.memory_budget_gb, threads=args.threads,
        context_length=args.context_length, max_concurrency=args.max_concurrency, max_queue=args.max_queue,
        max_tokens=args.max_tokens, default_max_tokens=min(1024, args.max_tokens), max_n=args.max_n,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024), request_timeout=args.request_timeout,
        header_timeout=args.header_timeout, log_prompts=args.log_prompts, preload=not args.no_preload)


def cmd_serve(args: argparse.Namespace) -> int:
    from llmos.serve.server import serve

    settings = settings_from_args(args)
    if args.pull:
        from llmos.library import InvalidNameError, ModelName, pull

        for spec in settings.models:
            if "=" in spec:
                continue
            try:
                name = ModelName.parse(spec)
            except InvalidNameError:
                continue  # a path: nothing to pull
            if not (name.path() / "config.json").is_file():
                pull(spec)
    return serve(settings, args.log_level)


def main(argv: list[str] | None = None) -> int:
    """`python -m llmos.serve ...`: the same flags as `llmos serve`."""
    import sys

    from llmos.cli import main as llmos_main

    return llmos_main(["serve", *(sys.argv[1:] if argv is None else argv)])
