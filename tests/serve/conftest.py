"""Servers for the serve tests: real `llmos serve` processes on loopback ports, started once per
session and stopped by their own process handles.

- `tiny_server`: the tiny random model (char tokenizer + a simple chat template) under two names,
  `tiny` and `tiny-b`, no API key. Most tests use it: it answers in milliseconds.
- `keyed_server`: the library (holding the tiny model as `tiny:latest`) behind an API key.
- `smol_server`: the real SmolLM2-135M-Instruct, for what only a real model can show (chat
  templates with special tokens, JSON output, generations long enough to overlap), with small
  limits (4 running + 4 queued requests) so that overload is easy to provoke.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
API_KEY = "sk-test-0123456789abcdef"

# Only characters the tiny model's vocabulary (tiny Shakespeare) knows, so every prompt encodes.
TINY_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, api_key: str = "none", **kwargs):
        import openai

        return openai.OpenAI(base_url=self.v1, api_key=api_key, max_retries=0, timeout=60, **kwargs)

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(self.url + "/metrics", timeout=10,
                         headers={"Authorization": f"Bearer {API_KEY}"}).text
        for line in text.splitlines():
            if line.startswith(name + labels + " ") or (not labels and line.startswith(name + "{")):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


def start_server(args: list[str], home: Path, log_path: Path, env: dict[str, str] | None = None,
                 timeout: float = 120) -> Server:
    port = free_port()
    environ = {**os.environ, "LLMOS_HOME": str(home), **(env or {})}
    environ.pop("LLMOS_API_KEY", None) if "LLMOS_API_KEY" not in (env or {}) else None
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "llmos.serve", "--port", str(port), "--threads", "1",
                                    *args], stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return Server(url, process, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not answer /health within {timeout}s:\n{log_path.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_chat_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template in its tokenizer_config.json."""
    folder = tmp_path_factory.mktemp("tiny-chat") / "tiny-chat"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = TINY_TEMPLATE
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def serve_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-home")


@pytest.fixture(scope="session")
def tiny_server(tiny_chat_dir: Path, serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "tiny.log"
    server = start_server([f"tiny={tiny_chat_dir}", f"tiny-b={tiny_chat_dir}", "--max-tokens", "256",
                           "--max-concurrency", "8", "--max-queue", "64", "--log-prompts", "--header-timeout", "2"], serve_home, log)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def library_home(tiny_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An $LLMOS_HOME whose library holds the tiny chat model as `tiny:latest`."""
    home = tmp_path_factory.mktemp("library-home") / "home"
    shutil.copytree(tiny_chat_dir, home / "models" / "tiny" / "latest")
    return home


@pytest.fixture(scope="session")
def keyed_server(library_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The whole library (no --model: names are looked up on request) behind an API key."""
    log = tmp_path_factory.mktemp("logs") / "keyed.log"
    server = start_server(["--api-key", API_KEY, "--max-tokens", "64"], library_home, log)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def smol_server(smollm2_dir: Path, serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "smol.log"
    server = start_server([f"smollm2={smollm2_dir}", "--context-length", "2048", "--max-concurrency", "4",
                           "--max-queue", "4"],
                          serve_home, log, timeout=180)
    yield server
    stop_server(server)


def raw_http(server: Server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, bytes]:
    """A request written byte for byte (clients refuse some headers a real client may send, such as
    `Authorization: Bearer ` with nothing after it). Returns (status, body)."""
    host, port = server.url.removeprefix("http://").split(":")
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}",
            "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]
