"""Training data: a corpus of text files becomes packed, memory-mapped token shards."""

from typing import Any

from llmos.data.cli import add_commands

__all__ = ["DataError", "TokenData", "TokenSplit", "add_commands", "build_tokenizer", "load_corpus", "prepare"]

_LAZY = {"DataError": "sources", "TokenData": "shards", "TokenSplit": "shards", "build_tokenizer": "pack",
         "load_corpus": "sources", "prepare": "pack"}


def __getattr__(name: str) -> Any:
    # Lazy so that building the CLI parser (add_commands) imports neither numpy nor tokenizers.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"llmos.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'llmos.data' has no attribute {name!r}")
