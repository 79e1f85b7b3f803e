"""`llmos data prepare`: deterministic shards, nanoGPT's split, normalisation, dedupe, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmos.data import DataError, TokenData, prepare
from llmos.data import pack as prepare_module
from llmos.data.pack import token_dtype
from llmos.errors import ConfigError
from llmos.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def small_text(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    path.write_text((shared_data / "tinyshakespeare.txt").read_text()[:60_000])
    return path


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_input_gives_byte_identical_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": f"document {i}: " + "to be or not to be " * (i % 7 + 1)})
                              for i in range(300)))
    one = prepare([docs], "bpe:300", tmp_path / "a", workers=1)
    # Force the worker-process path on this small corpus: the result must not depend on it.
    monkeypatch.setattr(prepare_module, "PARALLEL_MIN_CHARS", 0)
    monkeypatch.setattr(prepare_module, "CHUNK_CHARS", 2000)
    two = prepare([docs], "bpe:300", tmp_path / "b", workers=2)
    assert one == two
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert one["documents"] == 300 and one["dtype"] == "uint16"


def test_char_split_is_nanogpts(small_text: Path, tmp_path: Path) -> None:
    m = prepare([small_text], "char", tmp_path / "out")
    text = small_text.read_text()
    n = len(text)  # one document: no EOS, one token per character
    assert m["splits"]["train"]["tokens"] == int(n * 0.9)
    assert m["splits"]["val"]["tokens"] == n - int(n * 0.9)
    assert m["vocab_size"] == len(set(text)) and m["eos_id"] is None
    data = TokenData(tmp_path / "out")
    tok = data.tokenizer()
    assert tok.decode(data.train.read(0, len(data.train))) == text[:int(n * 0.9)]
    assert tok.decode(data.val.read(0, len(data.val))) == text[int(n * 0.9):]
    assert m["sources"][0]["sha256"] and m["tokenizer"]["spec"] == "char"


def test_normalises_and_drops_duplicates(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes("\ufeffcafe\u0301 one\r\ntwo\rthree".encode())  # BOM, CRLF, CR, NFD
    (src / "sub" / "b.md").write_text("café one\ntwo\nthree")  # the same document once normalised
    (src / "c.jsonl").write_text('{"text": "hello"}\n\n{"text": "hello"}\n{"text": "world"}\n')
    (src / "ignored.bin").write_bytes(b"\x00\x01")  # unknown suffixes inside folders are skipped
    m = prepare([src], "char", tmp_path / "out", val_fraction=0.2)
    assert m["documents"] == 3 and m["duplicates_dropped"] == 2
    data = TokenData(tmp_path / "out")
    tok = data.tokenizer()
    ids = np.concatenate([data.train.read(0, len(data.train)), data.val.read(0, len(data.val))])
    eos = tok.decode([m["eos_id"]])
    assert tok.decode(ids) == eos.join(["café one\ntwo\nthree", "hello", "world"]) + eos


def test_shards_split_and_stitch(tmp_path: Path, small_text: Path) -> None:
    prepare([small_text], "char", tmp_path / "out", shard_tokens=10_000)
    data = TokenData(tmp_path / "out")
    assert len(data.train.shards) == 6
    whole = np.concatenate([np.asarray(s) for s in data.train.shards])
    rows = data.train.windows(np.array([9_990, 0, 40_000]), 33)
    assert (rows[0] == whole[9_990:10_023]).all() and (rows[2] == whole[40_000:40_033]).all()


def test_dtype_follows_vocabulary() -> None:
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty corpus"),
    (b"   \n\n", "empty corpus"),
    (b"ELF\x00\x01\x02binary", "binary file (NUL byte at offset 3)"),
    (b"ok text \xff\xfe more", "not valid UTF-8 (bad byte 0xff at offset 8)"),
])
def test_bad_text_files_are_named_and_nothing_is_written(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.txt") as e:
        prepare([bad], "char", tmp_path / "out")
    assert message in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]  # no output, no partial folder


def test_bad_jsonl_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"content": "no text field"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected an object with a string field 'text'"):
        prepare([bad], "char", tmp_path / "out")


def test_zero_token_val_split_is_an_error(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abcdefg")
    with pytest.raises(DataError, match=r"--val-fraction 0.0 of 7 tokens gives a validation split of zero tokens"):
        prepare([tiny], "char", tmp_path / "out", val_fraction=0.0)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="val-fraction"):
        prepare([tiny], "char", tmp_path / "out", val_fraction=1.5)


def test_unsupported_inputs(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match=r"x.csv: unsupported file type '.csv'"):
        prepare([tmp_path / "x.csv"], "char", tmp_path / "out")
    with pytest.raises(Exception, match=r"nope\.txt: no such file"):
        prepare([tmp_path / "nope.txt"], "char", tmp_path / "out")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"x.parquet: reading .parquet files needs pyarrow"):
            prepare([tmp_path / "x.parquet"], "char", tmp_path / "out")


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path, small_text: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("...")
    with pytest.raises(DataError, match="not a prepared data folder"):
        prepare([small_text], "char", tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_existing_tokenizer_folder(tmp_path: Path, small_text: Path) -> None:
    Tokenizer.train_char([small_text.read_text()]).save(tmp_path / "tok")
    m = prepare([small_text], str(tmp_path / "tok"), tmp_path / "out")
    assert m["vocab_size"] == len(set(small_text.read_text()))
