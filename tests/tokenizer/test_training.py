"""Training byte-level BPE and char-level tokenizers on tiny Shakespeare."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.errors import ConfigError
from llmos.tokenizer import TokenizeError, Tokenizer, train_bpe, train_char


@pytest.fixture(scope="module")
def bpe(shakespeare: str) -> Tokenizer:
    return Tokenizer.train_bpe([shakespeare[:200_000]], vocab_size=512)


def test_bpe_round_trip_and_size(bpe: Tokenizer, shakespeare: str) -> None:
    text = shakespeare[:200_000]
    ids = bpe.encode(text)
    assert bpe.vocab_size == 512
    assert max(ids) < 512
    assert bpe.decode(ids) == text
    # 256 byte symbols + 255 merges must compress English clearly below one token per byte.
    assert len(ids) < 0.6 * len(text.encode("utf-8"))


def test_bpe_special_token_and_unseen_text(bpe: Tokenizer) -> None:
    assert bpe.eos_token == "<|endoftext|>" and bpe.eos_id is not None
    assert bpe.eos_ids == {bpe.eos_id}
    assert bpe.add_bos_token is False
    # Byte-level: text never seen in training still round-trips.
    unseen = "naïve 東京 🙂\r\n"
    assert bpe.decode(bpe.encode(unseen)) == unseen
    ids = bpe.encode("end<|endoftext|>")
    assert ids[-1] == bpe.eos_id
    assert bpe.eos_id not in bpe.encode("end<|endoftext|>", parse_special=False)
    assert bpe.decode(ids, skip_special_tokens=True) == "end"


def test_bpe_save_and_reload(bpe: Tokenizer, shakespeare: str, tmp_path: Path) -> None:
    back = Tokenizer.from_folder(bpe.save(tmp_path / "bpe"))
    text = shakespeare[200_000:210_000]
    assert back.encode(text) == bpe.encode(text)
    assert (back.vocab_size, back.eos_id, back.bos_id) == (512, bpe.eos_id, bpe.bos_id)


def test_bpe_vocab_too_small() -> None:
    with pytest.raises(ConfigError, match="vocab_size 100"):
        train_bpe(["abc"], vocab_size=100)


def test_char_vocab_and_round_trip(shakespeare: str, tmp_path: Path) -> None:
    tok = train_char([shakespeare])
    assert tok.vocab_size == 65
    chars = sorted(set(shakespeare))
    ids = tok.encode(shakespeare)
    assert len(ids) == len(shakespeare)
    assert ids[:200] == [chars.index(ch) for ch in shakespeare[:200]]  # nanoGPT's stoi
    assert tok.decode(ids) == shakespeare  # spaces and newlines included
    assert tok.bos_id is None and tok.eos_id is None

    back = Tokenizer.from_folder(tok.save(tmp_path / "char"))
    assert back.vocab_size == 65
    assert back.encode(shakespeare[:3000]) == ids[:3000]
    assert back.decode(ids[:3000]) == shakespeare[:3000]


def test_char_unknown_character_fails_loudly() -> None:
    tok = train_char(["abc \n"])
    with pytest.raises(TokenizeError, match="cannot encode"):
        tok.encode("abz")


def test_char_special_tokens_come_after_characters() -> None:
    tok = Tokenizer.train_char(["ba\n"], special_tokens=["<eos>"])
    assert tok.encode("ab\n") == [1, 2, 0]
    assert tok.eos_id == 3 and tok.vocab_size == 4
    assert tok.encode("a<eos>") == [1, 3]
    assert tok.decode([1, 3], skip_special_tokens=True) == "a"


@pytest.mark.slow
def test_trained_tokenizers_load_in_transformers(bpe: Tokenizer, shakespeare: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    text = shakespeare[:5000]
    for name, tok in (("bpe", bpe), ("char", train_char([shakespeare]))):
        hf = AutoTokenizer.from_pretrained(tok.save(tmp_path / name))
        ids = tok.encode(text)
        assert hf.encode(text) == ids
        assert hf.decode(ids) == text
        assert len(hf) == tok.vocab_size
