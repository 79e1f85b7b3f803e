"""Bad input through the real `llmos` command: one clear line naming the culprit, a non-zero
exit, and nothing half-written left in $LLMOS_HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

LLMOS = str(Path(sys.executable).parent / "llmos")


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMOS_HOME": str(home)}
    return subprocess.run([LLMOS, *args], capture_output=True, text=True, env=env, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, home: Path, *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llmos: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    leftovers = [p for p in home.rglob("*")] if home.exists() else []
    assert not [p for p in leftovers if p.is_file() and "models" in p.parts], leftovers


def test_truncated_gguf(smollm2_gguf: Path, tmp_path: Path, llmos_home: Path) -> None:
    bad = tmp_path / "truncated.gguf"
    with open(smollm2_gguf, "rb") as src:
        bad.write_bytes(src.read(1_000_000))
    assert_clean_failure(run("import", str(bad), home=llmos_home), llmos_home, "truncated.gguf")


def test_corrupt_gguf(tmp_path: Path, llmos_home: Path) -> None:
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"NOTAGGUF" + os.urandom(4096))
    assert_clean_failure(run("import", str(bad), home=llmos_home), llmos_home, "corrupt.gguf")


def test_safetensors_with_missing_tensor(tiny_model_dir: Path, tmp_path: Path, llmos_home: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, broken / "model.safetensors")
    proc = run("import", str(broken), "--name", "broken", home=llmos_home)
    assert_clean_failure(proc, llmos_home, "model.safetensors", "model.layers.1.mlp.down_proj.weight")


def test_unknown_architecture(tiny_model_dir: Path, tmp_path: Path, llmos_home: Path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(tiny_model_dir, odd)
    config = json.loads((odd / "config.json").read_text())
    config["model_type"] = "mamba"
    (odd / "config.json").write_text(json.dumps(config))
    assert_clean_failure(run("import", str(odd), home=llmos_home), llmos_home, "config.json", "mamba")


def test_nonexistent_name(llmos_home: Path) -> None:
    assert_clean_failure(run("generate", "nosuch:model", "hi", home=llmos_home), llmos_home, "nosuch:model")
    assert_clean_failure(run("pull", "nosuch:model", home=llmos_home), llmos_home, "nosuch:model")


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a\\b", "a" * 300, "UPPER/..:x"])
def test_names_cannot_escape_the_store(name: str, llmos_home: Path) -> None:
    assert_clean_failure(run("generate", name, "hi", home=llmos_home), llmos_home)


def test_pickle_weights_are_refused(tiny_model_dir: Path, tmp_path: Path, llmos_home: Path) -> None:
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(tiny_model_dir / "config.json", evil / "config.json")
    shutil.copy(tiny_model_dir / "tokenizer.json", evil / "tokenizer.json")
    torch.save({"x": Payload()}, evil / "pytorch_model.bin")
    proc = run("import", str(evil), home=llmos_home)
    assert_clean_failure(proc, llmos_home, "pytorch_model.bin", "never unpickles")
    assert not sentinel.exists()
