"""Import other formats into our model folder, and export it back out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from llmos.checkpoint.folder import (
    LINEAGE_FILE,
    Pretrained,
    build_model,
    load_pretrained,
    save_pretrained,
)
from llmos.checkpoint.gguf_file import read_gguf
from llmos.checkpoint.hf_format import config_from_hf, state_dict_from_hf
from llmos.errors import LlmosError, ModelFormatError, NotFoundError
from llmos.fsutil import atomic_dir, sha256_file
from llmos.tokenizer import Tokenizer


def load_gguf(path: str | os.PathLike) -> Pretrained:
    """A GGUF file as a model in memory: weights dequantized to fp32, tokenizer from its metadata."""
    path = Path(path)
    gguf = read_gguf(path)
    config = config_from_hf(gguf.hf_config, source=str(path))
    state = state_dict_from_hf(gguf.tensors, config, source=str(path))
    model = build_model(config, state, source=str(path))
    tokenizer = Tokenizer.from_gguf_metadata(gguf.tokenizer_meta)
    lineage = {"source": {"kind": "gguf", "file": path.name, "sha256": sha256_file(path),
                          "quantization": gguf.metadata.get("file_type"),
                          "general": {k: v for k, v in gguf.metadata.items() if isinstance(v, str | int | float)}}}
    return Pretrained(model, tokenizer, gguf.generation_config, lineage, path)


def import_model(src: str | os.PathLike, dest: str | os.PathLike, lineage: dict | None = None) -> Path:
    """Import a .gguf file or a Hugging Face folder into a model folder at `dest` (atomically)."""
    src = Path(src)
    if not src.exists():
        raise NotFoundError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix.lower() != ".gguf":
            raise ModelFormatError(f"{src}: expected a .gguf file or a Hugging Face model folder")
        loaded = load_gguf(src)
    else:
        loaded = load_pretrained(src, dtype=None)
        loaded.lineage = {"source": {"kind": "hf-folder", "path": str(src.resolve())}}
        if loaded.tokenizer is None:
            raise ModelFormatError(f"{src}: no tokenizer.json in the model folder")
    return save_pretrained(dest, loaded.model, loaded.tokenizer, loaded.generation_config,
                           {**loaded.lineage, **(lineage or {})})


def export_hf(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export a model folder as a plain Hugging Face folder (ours already is one: copy, minus lineage)."""
    src, out = Path(src), Path(out)
    if out.exists() and any(out.iterdir()):
        raise LlmosError(f"{out}: output folder exists and is not empty")
    with atomic_dir(out) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name != LINEAGE_FILE:
                shutil.copy2(f, tmp / f.name)
    return out
