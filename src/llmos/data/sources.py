"""Reading a corpus: find the files, decode and normalise each document, drop exact duplicates.

A .txt or .md file is one document; a .jsonl file holds one document per line (its `text`
field); a .parquet file one per row of its `text` column. Folders are walked in sorted order, so
the same inputs always give the same documents in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmos.errors import LlmosError, NotFoundError

SUFFIXES = (".txt", ".md", ".jsonl", ".parquet")


class DataError(LlmosError):
    """An input file that cannot become training text (binary, not UTF-8, malformed, empty)."""


def find_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The corpus files named by `inputs` (files, or folders searched recursively), in a fixed order."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"{path}: folder has no {'/'.join(SUFFIXES)} files")
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                                f"expected one of {', '.join(SUFFIXES)}")
            files.append(path)
        else:
            raise NotFoundError(f"{path}: no such file or folder")
    if not files:
        raise DataError("no input files given")
    return files


def normalize(text: str) -> str:
    """One canonical form per text, so equal documents compare equal and shards are reproducible:
    no byte-order mark, '\\n' line ends only, Unicode NFC."""
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text)


def decode_utf8(data: bytes, where: str) -> str:
    # A NUL byte never occurs in text we want to train on, and is the surest sign of a binary file.
    nul = data.find(b"\x00")
    if nul != -1:
        raise DataError(f"{where}: looks like a binary file (NUL byte at offset {nul}); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid UTF-8 (bad byte 0x{data[e.start]:02x} at offset {e.start})") from None


def _jsonl_documents(path: Path, data: bytes) -> Iterator[str]:
    for lineno, line in enumerate(decode_utf8(data, str(path)).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"{path}:{lineno}: expected an object with a string field 'text'")
        yield record["text"]


def _parquet_documents(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading .parquet files needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path, columns=["text"])
    except Exception as e:  # pyarrow raises several unrelated types for bad files and missing columns
        raise DataError(f"{path}: cannot read a 'text' column ({e})") from None
    for row, value in enumerate(table.column("text").to_pylist()):
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"{path}: row {row}: 'text' is {type(value).__name__}, expected a string")
        yield value


def read_documents(path: Path) -> Iterator[str]:
    """The raw (not yet normalised) documents of one corpus file."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_documents(path)
        return
    data = path.read_bytes()
    if path.suffix.lower() == ".jsonl":
        yield from _jsonl_documents(path, data)
    else:
        yield decode_utf8(data, str(path))


@dataclass
class SourceInfo:
    path: str
    sha256: str
    bytes: int
    documents: int = 0
    duplicates: int = 0


@dataclass
class Corpus:
    documents: list[str] = field(default_factory=list)
    sources: list[SourceInfo] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.sources)


def load_corpus(inputs: Sequence[str | os.PathLike]) -> Corpus:
    """All documents of `inputs`, normalised, blank ones skipped and exact duplicates dropped
    (the first occurrence is kept)."""
    corpus = Corpus()
    seen: set[bytes] = set()
    for path in find_files(inputs):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        info = SourceInfo(path=str(path), sha256=digest, bytes=path.stat().st_size)
        for raw in read_documents(path):
            doc = normalize(raw)
            if not doc.strip():
                continue
            key = hashlib.sha256(doc.encode()).digest()
            if key in seen:
                info.duplicates += 1
                continue
            seen.add(key)
            corpus.documents.append(doc)
            info.documents += 1
        corpus.sources.append(info)
    if not corpus.documents:
        names = ", ".join(s.path for s in corpus.sources[:5])
        raise DataError(f"empty corpus: no text found in {names}")
    return corpus
