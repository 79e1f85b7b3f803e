"""Reading prepared token shards back: memory-mapped, so a corpus larger than RAM costs nothing
to open and each batch reads only the tokens it needs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from llmos.data.pack import FORMAT, MANIFEST
from llmos.data.sources import DataError
from llmos.errors import NotFoundError
from llmos.tokenizer import Tokenizer


class TokenSplit:
    """One split (train or val) as a single logical array of token ids over its shard files."""

    def __init__(self, files: list[Path], dtype: np.dtype) -> None:
        self.shards = [np.memmap(f, dtype=dtype, mode="r") for f in files if f.stat().st_size]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def windows(self, offsets: np.ndarray, length: int) -> np.ndarray:
        """Rows `tokens[o : o + length]` for each offset, as an int64 array [len(offsets), length]."""
        if len(self.shards) == 1:  # the common case: one fancy-indexing read
            index = np.asarray(offsets, dtype=np.int64)[:, None] + np.arange(length)
            return self.shards[0][index].astype(np.int64)
        return np.stack([self.read(int(o), length) for o in offsets]).astype(np.int64)

    def read(self, start: int, length: int) -> np.ndarray:
        """`length` tokens from `start`, stitched across shard boundaries."""
        parts = []
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        while length > 0:
            local = start - int(self.starts[i])
            part = self.shards[i][local:local + length]
            parts.append(part)
            start, length, i = start + len(part), length - len(part), i + 1
        return np.concatenate(parts)


class TokenData:
    """A folder written by `llmos data prepare`: its manifest, tokenizer and train/val splits."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise NotFoundError(f"{self.folder}: not a prepared data folder (no {MANIFEST}); "
                                "create one with `llmos data prepare`")
        self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{path}: not an llmos token manifest (format {self.manifest.get('format')!r})")
        self.dtype = np.dtype(self.manifest["dtype"])
        self.splits: dict[str, TokenSplit] = {}
        for name, split in self.manifest["splits"].items():
            files = []
            for shard in split["shards"]:
                file = self.folder / shard["file"]
                expected = shard["tokens"] * self.dtype.itemsize
                if not file.is_file() or file.stat().st_size != expected:
                    raise DataError(f"{file}: missing or truncated (expected {expected} bytes)")
                files.append(file)
            self.splits[name] = TokenSplit(files, self.dtype)

    @property
    def train(self) -> TokenSplit:
        return self.splits["train"]

    @property
    def val(self) -> TokenSplit:
        return self.splits["val"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_folder(self.folder)
