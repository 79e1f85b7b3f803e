"""Loading Hugging Face tokenizer folders: config variants and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.errors import ConfigError, ModelFormatError, NotFoundError
from llmos.tokenizer import Tokenizer

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def small() -> Tokenizer:
    text = "the quick brown fox jumps over the lazy dog. " * 50
    return Tokenizer.train_bpe([text], vocab_size=300, special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"])


def _folder(small: Tokenizer, tmp_path: Path, config: dict | None) -> Path:
    folder = tmp_path / "tok"
    small.save(folder)
    if config is None:
        (folder / "tokenizer_config.json").unlink()
    else:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_config_tokens_flags_and_templates(small: Tokenizer, tmp_path: Path) -> None:
    folder = _folder(small, tmp_path, {
        "bos_token": {"content": "<s>", "lstrip": False},
        "eos_token": "</s>",
        "add_bos_token": True,
        "model_max_length": 1000000000000000019884624838656,
        "chat_template": [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": "TOOLS"}],
    })
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [42]}), encoding="utf-8")
    tok = Tokenizer.from_folder(folder)
    s_id, end_id = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    assert (tok.bos_id, tok.eos_id) == (s_id, end_id)
    assert tok.add_bos_token and tok.encode("the fox")[0] == s_id
    assert tok.encode("the fox", add_special_tokens=False)[0] != s_id
    assert tok.model_max_length is None  # transformers' "unknown" sentinel
    assert tok.eos_ids == {end_id, 42, tok.token_to_id("<|im_end|>")}
    assert tok.chat_template == CHATML
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tools=[{"name": "f"}]) == "TOOLS"
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template="tool_use") == "TOOLS"


def test_jinja_file_overrides_config_template(small: Tokenizer, tmp_path: Path) -> None:
    folder = _folder(small, tmp_path, {"eos_token": "</s>", "chat_template": "FROM CONFIG"})
    (folder / "chat_template.jinja").write_text(CHATML, encoding="utf-8")
    tok = Tokenizer.from_folder(folder)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # Saving again keeps the .jinja file (which transformers prefers) in step.
    tok.save(folder)
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == CHATML
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == CHATML


def test_missing_config_is_fine(small: Tokenizer, tmp_path: Path) -> None:
    tok = Tokenizer.from_folder(_folder(small, tmp_path, None))
    assert tok.bos_id is None and tok.chat_template is None
    assert tok.encode("the dog") == small.encode("the dog")


def test_tokenizer_json_not_json(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json"):
        Tokenizer.from_folder(tmp_path)


def test_tokenizer_json_not_a_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Nonsense"}}', encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json"):
        Tokenizer.from_folder(tmp_path)


def test_config_not_json(small: Tokenizer, tmp_path: Path) -> None:
    folder = _folder(small, tmp_path, {})
    (folder / "tokenizer_config.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"tokenizer_config\.json"):
        Tokenizer.from_folder(folder)


def test_bad_config_fields_name_the_field(small: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eos_token"):
        Tokenizer.from_folder(_folder(small, tmp_path, {"eos_token": 5}))
    with pytest.raises(ConfigError, match="add_bos_token"):
        Tokenizer.from_folder(_folder(small, tmp_path, {"add_bos_token": "yes"}))
    with pytest.raises(ConfigError, match="chat_template"):
        Tokenizer.from_folder(_folder(small, tmp_path, {"chat_template": [{"name": "x"}]}))


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nowhere"):
        Tokenizer.from_folder(tmp_path / "nowhere")
    with pytest.raises(NotFoundError, match=r"tokenizer\.json"):
        Tokenizer.from_folder(tmp_path)


def test_no_chat_template_is_a_config_error(small: Tokenizer) -> None:
    with pytest.raises(ConfigError, match="no chat template"):
        small.apply_chat_template([{"role": "user", "content": "hi"}])


def test_save_is_atomic_and_leaves_no_temp_files(small: Tokenizer, tmp_path: Path) -> None:
    folder = small.save(tmp_path / "a" / "b")
    small.save(folder)  # overwrite in place
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["clean_up_tokenization_spaces"] is False
    assert config["add_bos_token"] is False and config["eos_token"] == "<s>"
