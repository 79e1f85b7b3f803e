"""Serving load test: 1, 8 and 32 concurrent streaming chat clients against `llmos serve`, and in the
same run against llama-cpp-python's server when it is installed.

Each client sends short distinct prompts (64 new tokens, temperature 0, ignore_eos so every
reply has the same length) for a bounded time; traffic goes to 127.0.0.1 only. Reported per
level: requests/s, output tokens/s, p50/p99 time to first token, errors, and truncated streams
(a 200 stream that ended without a finish_reason, [DONE] or the full token count).

    python benchmarks/serve.py [--model smollm2:135m-instruct] [--seconds 20] [--levels 1,8,32]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

NEW_TOKENS = 64
TOPICS = ["rivers", "bread", "owls", "trains", "glaciers", "chess", "tea", "comets", "bees", "lighthouses",
          "violins", "deserts", "coral", "kites", "maps", "volcanoes"]


@dataclass
class Level:
    clients: int
    seconds: float = 0.0
    requests: int = 0
    tokens: int = 0
    errors: int = 0
    truncated: int = 0
    ttft: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not start")


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, level: Level,
                      extra: dict) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": NEW_TOKENS,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, **extra}
    t0 = time.perf_counter()
    first = None
    chunks = finish = 0
    done = False
    usage_tokens = None
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                level.errors += 1
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    level.errors += 1
                    return
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter() - t0
                    if choice.get("finish_reason"):
                        finish += 1
    except httpx.HTTPError:
        level.errors += 1
        return
    tokens = usage_tokens if usage_tokens is not None else chunks
    if not done or finish != 1 or tokens < NEW_TOKENS:
        level.truncated += 1
    level.requests += 1
    level.tokens += tokens
    if first is not None:
        level.ttft.append(first)


async def run_level(url: str, model: str, clients: int, seconds: float, extra: dict) -> Level:
    level = Level(clients)
    stop_at = time.perf_counter() + seconds
    counter = [0]

    async def client_loop(k: int) -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            while time.perf_counter() < stop_at:
                counter[0] += 1
                prompt = f"Write two sentences about {TOPICS[counter[0] % len(TOPICS)]} (request {counter[0]})."
                await one_request(client, url, model, prompt, level, extra)

    t0 = time.perf_counter()
    await asyncio.gather(*(client_loop(k) for k in range(clients)))
    level.seconds = time.perf_counter() - t0
    return level


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def report(name: str, levels: list[Level]) -> None:
    print(f"\n{name}")
    print(f"{'clients':>7} {'req/s':>7} {'out tok/s':>10} {'p50 TTFT':>9} {'p99 TTFT':>9} {'errors':>7} {'truncated':>9}")
    for lv in levels:
        print(f"{lv.clients:>7} {lv.requests / lv.seconds:>7.2f} {lv.tokens / lv.seconds:>10.1f} "
              f"{percentile(lv.ttft, 0.5):>8.2f}s {percentile(lv.ttft, 0.99):>8.2f}s {lv.errors:>7} {lv.truncated:>9}")


def bench_server(name: str, command: list[str], url: str, model: str, levels: list[int], seconds: float,
                 extra: dict, log: Path) -> list[Level]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, process)
        asyncio.run(run_level(url, model, 1, 3, extra))  # warm-up
        results = [asyncio.run(run_level(url, model, n, seconds, extra)) for n in levels]
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    report(name, results)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2:135m-instruct")
    p.add_argument("--seconds", type=float, default=20.0, help="load duration per concurrency level")
    p.add_argument("--levels", default="1,8,32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--gguf", help="GGUF file for llama-cpp-python (default: the model's import source, if known)")
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    print(f"model {args.model}, {NEW_TOKENS} new tokens per request, temperature 0, {args.seconds:.0f}s per level")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ours = [sys.executable, "-m", "llmos.serve", args.model, "--port", str(port),
            "--max-concurrency", str(max(levels)), "--max-queue", str(4 * max(levels)), "--context-length", "1024"]
    if args.threads:
        ours += ["--threads", str(args.threads)]
    bench_server("llmos serve", ours, url, args.model.split("=")[0], levels, args.seconds, {"ignore_eos": True},
                 logs / "bench-llmos-serve.log")

    if importlib.util.find_spec("llama_cpp") is None:
        print("\nllama-cpp-python: not installed, column skipped "
              "(CMAKE_ARGS=-DGGML_NATIVE=ON pip install 'llama-cpp-python[server]', ~10 min build)")
        return 0
    gguf = args.gguf
    if gguf is None:
        from llmos.library import resolve

        source = json.loads((resolve(args.model) / "llmos.json").read_text()).get("source", {})
        cached = list((Path.home() / ".cache").rglob(source.get("file", "?"))) if source.get("file") else []
        gguf = str(cached[0]) if cached else None
    if gguf is None:
        print("\nllama-cpp-python: no GGUF file found for this model; pass --gguf")
        return 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # --interrupt_requests False: by default a new request ends the running stream early.
    theirs = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
              "--n_ctx", "1024", "--interrupt_requests", "False", "--model_alias", "model"]
    bench_server("llama-cpp-python server (one request at a time, --interrupt_requests False)", theirs, url,
                 "model", levels, args.seconds, {}, logs / "bench-llama-cpp.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
