"""`llmos data prepare`: a corpus becomes packed token shards plus a manifest.

    out/
      manifest.json             sources (sha256), documents, token counts, tokenizer, shard digests
      tokenizer.json, tokenizer_config.json
      train-00000.bin ...       flat uint16 (or uint32) token ids, read back with numpy.memmap
      val-00000.bin ...

Documents are tokenized in worker processes, in order, and the split is taken on the token
stream (val = the last `val_fraction` of it, as nanoGPT does), so the same inputs and settings
always give byte-identical shards. The folder appears in one rename when complete.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from llmos.data.sources import Corpus, DataError, load_corpus
from llmos.errors import ConfigError, NotFoundError
from llmos.fsutil import atomic_dir, sha256_file, write_json_atomic
from llmos.tokenizer import Tokenizer

MANIFEST = "manifest.json"
FORMAT = "llmos-tokens"
EOS = "<|endoftext|>"
SHARD_TOKENS = 1 << 28  # 512 MiB of uint16 per shard: small enough to copy, large enough to be few
CHUNK_CHARS = 1 << 20  # characters per work item sent to a worker
PARALLEL_MIN_CHARS = 8 << 20  # below this, starting worker processes costs more than it saves


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def build_tokenizer(spec: str, documents: Sequence[str]) -> Tokenizer:
    """The tokenizer named by `spec`: `char`, `bpe:VOCAB` (both trained on `documents`), a
    folder or tokenizer.json path, or `model:NAME` / a library model name (its tokenizer)."""
    if spec == "char":
        # One document needs no separator: that keeps nanoGPT's exact vocabulary for a single text.
        return Tokenizer.train_char(documents, special_tokens=[EOS] if len(documents) > 1 else [])
    if spec.startswith("bpe:"):
        try:
            vocab = int(spec.removeprefix("bpe:"))
        except ValueError:
            raise ConfigError(f"--tokenizer {spec!r}: expected bpe:VOCAB_SIZE, e.g. bpe:8000") from None
        return Tokenizer.train_bpe(documents, vocab, special_tokens=[EOS])
    path = Path(spec)
    if path.exists():
        return Tokenizer.from_folder(path)
    from llmos.library import resolve  # only for library names

    name = spec.removeprefix("model:")
    try:
        folder = resolve(name)
    except NotFoundError:
        raise NotFoundError(f"--tokenizer {spec!r}: not char, bpe:VOCAB, an existing path or a library "
                            "model name") from None
    return Tokenizer.from_folder(folder)


# --- tokenizing in worker processes ----------------------------------------------------------------

_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _worker_tokenizer = Tokenizer.from_folder(tokenizer_dir)


def _encode_chunk(args: tuple[list[str], int | None, str]) -> bytes:
    docs, eos_id, dtype = args
    assert _worker_tokenizer is not None
    return _encode(_worker_tokenizer, docs, eos_id, np.dtype(dtype)).tobytes()


def _encode(tokenizer: Tokenizer, docs: list[str], eos_id: int | None, dtype: np.dtype) -> np.ndarray:
    pieces = []
    for ids in tokenizer.encode_batch(docs, add_special_tokens=False):
        if eos_id is not None:
            ids.append(eos_id)
        pieces.append(np.asarray(ids, dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)


def _chunks(documents: Sequence[str]) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for doc in documents:
        if size >= CHUNK_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(doc)
        size += len(doc)
    return chunks


def tokenize_to_file(documents: Sequence[str], tokenizer: Tokenizer, tokenizer_dir: Path, dest: Path,
                     dtype: np.dtype, workers: int) -> int:
    """Encode `documents` in order (each followed by EOS when the tokenizer has one) into the raw
    file `dest`; returns the number of tokens. Output does not depend on `workers`."""
    eos_id = tokenizer.eos_id
    chunks = _chunks(documents)
    total = 0
    with open(dest, "wb") as f:
        if workers <= 1 or len(chunks) == 1 or sum(map(len, documents)) < PARALLEL_MIN_CHARS:
            for docs in chunks:
                arr = _encode(tokenizer, docs, eos_id, dtype)
                f.write(arr.tobytes())
                total += arr.size
            return total
        # spawn, not fork: the parent may hold tokenizers' (or torch's) thread pools.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)) as pool:
            for data in pool.imap(_encode_chunk, [(docs, eos_id, dtype.str) for docs in chunks]):
                f.write(data)
                total += len(data) // dtype.itemsize
    return total


def _write_shards(tokens: np.ndarray, folder: Path, split: str, shard_tokens: int) -> list[dict[str, Any]]:
    shards = []
    for i, start in enumerate(range(0, len(tokens), shard_tokens)):
        name = f"{split}-{i:05d}.bin"
        tokens[start:start + shard_tokens].tofile(folder / name)
        shards.append({"file": name, "tokens": int(min(shard_tokens, len(tokens) - start)),
                       "sha256": sha256_file(folder / name)})
    return shards


def _check_out(out: Path) -> None:
    # Replacing an earlier prepared folder is fine; replacing anything else would destroy user files.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise DataError(f"{out}: exists and is not a prepared data folder; choose another --out")


def prepare(inputs: Sequence[str | os.PathLike], tokenizer: str | Tokenizer, out: str | os.PathLike,
            val_fraction: float = 0.1, workers: int | None = None, shard_tokens: int = SHARD_TOKENS,
            corpus: Corpus | None = None) -> dict[str, Any]:
    """Read, normalise, deduplicate and tokenize `inputs` into shards under `out`; returns the manifest."""
    out = Path(out)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    _check_out(out)
    corpus = corpus or load_corpus(inputs)
    spec = tokenizer if isinstance(tokenizer, str) else "given"
    tok = build_tokenizer(tokenizer, corpus.documents) if isinstance(tokenizer, str) else tokenizer
    dtype = token_dtype(tok.vocab_size)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    with atomic_dir(out) as tmp:
        tok.save(tmp)
        raw = tmp / ".tokens.tmp"
        n = tokenize_to_file(corpus.documents, tok, tmp, raw, dtype, workers)
        n_train = int(n * (1.0 - val_fraction))  # nanoGPT: train = data[:int(n * 0.9)]
        if n_train == 0:
            raise DataError(f"the corpus has only {n} tokens: nothing left for training")
        if n_train == n:  # training needs held-out text to evaluate on
            raise DataError(f"--val-fraction {val_fraction} of {n} tokens gives a validation split of zero "
                            "tokens; use more text or a larger fraction")
        tokens = np.memmap(raw, dtype=dtype, mode="r")
        splits = {}
        for split, part in (("train", tokens[:n_train]), ("val", tokens[n_train:])):
            splits[split] = {"tokens": int(part.size), "shards": _write_shards(part, tmp, split, shard_tokens)}
        del tokens
        raw.unlink()
        digest = hashlib.sha256()
        for split in ("train", "val"):
            for shard in splits[split]["shards"]:
                digest.update(shard["sha256"].encode())
        manifest = {
            "format": FORMAT,
            "format_version": 1,
            "digest": digest.hexdigest(),
            "dtype": dtype.name,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "tokenizer": {"spec": spec, "sha256": sha256_file(tmp / "tokenizer.json")},
            "val_fraction": val_fraction,
            "documents": len(corpus.documents),
            "duplicates_dropped": corpus.duplicates,
            "characters": sum(map(len, corpus.documents)),
            "sources": [asdict(s) for s in corpus.sources],
            "splits": splits,
        }
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest
