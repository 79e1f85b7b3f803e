"""`llmos tokenizer train`: a tokenizer trained on a corpus saves, loads and round-trips text."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from llmos.data import add_commands
from llmos.tokenizer import Tokenizer


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_train_save_load_round_trip(tmp_path: Path, shared_data: Path, kind: str) -> None:
    corpus = tmp_path / "corpus.txt"
    text = (shared_data / "tinyshakespeare.txt").read_text()[:50_000]
    corpus.write_text(text)
    assert _run(["tokenizer", "train", str(corpus), "--kind", kind, "--vocab-size", "400",
                 "--out", str(tmp_path / "tok")]) == 0
    tok = Tokenizer.from_folder(tmp_path / "tok")
    sample = text[1000:3000]
    ids = tok.encode(sample, add_special_tokens=False)
    assert tok.decode(ids) == sample
    if kind == "bpe":
        assert tok.vocab_size == 400 and len(ids) < 0.6 * len(sample)  # merges learned
    else:
        assert tok.vocab_size == len(set(text)) and len(ids) == len(sample)


def test_prepare_command(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((shared_data / "tinyshakespeare.txt").read_text()[:20_000])
    assert _run(["data", "prepare", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "manifest.json").exists() and (tmp_path / "d" / "train-00000.bin").exists()
    assert "18,000 train + 2,000 val tokens" in capsys.readouterr().err
