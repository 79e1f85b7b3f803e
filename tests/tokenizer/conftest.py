"""Fixtures for the tokenizer tests. Expensive objects (GGUF metadata, transformers' reference
tokenizer) are built once per session: the test machine is small and shared. `smollm2_gguf` and
`shared_data` come from tests/conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmos.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def shakespeare(shared_data: Path) -> str:
    return (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def smollm2_meta(smollm2_gguf: Path) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(smollm2_gguf)
    return {key: field.contents() for key, field in reader.fields.items()}


@pytest.fixture(scope="session")
def smollm2(smollm2_meta: dict[str, Any]) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(smollm2_meta)


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_gguf: Path) -> Any:
    """transformers' tokenizer for the same GGUF (without loading the model, unlike `hf_smollm2`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
