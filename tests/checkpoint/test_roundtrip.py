"""Hugging Face folder → `llmos import` → `llmos export` → transformers: identical logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from llmos.checkpoint import export_hf, import_model, load_pretrained
from llmos.tokenizer import Tokenizer
from tests.model.test_parity import CASES, reference


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_export_round_trip(case: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    ref = reference(case)
    src = tmp_path / "hf-src"
    ref.save_pretrained(src)
    Tokenizer.from_folder(tiny_model_dir).save(src)
    imported = import_model(src, tmp_path / "store" / case)
    out = export_hf(imported, tmp_path / "exported")
    back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours = load_pretrained(imported).model
    ids = torch.randint(0, 320, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(ids).logits
        assert torch.equal(back(ids).logits, expected)
        assert (ours(ids) - expected).abs().max().item() < 1e-4
    assert (imported / "llmos.json").exists() and not (out / "llmos.json").exists()


def test_sharded_folder_loads(tmp_path: Path, tiny_model_dir: Path) -> None:
    ref = reference("llama-gqa-llama3-rope")
    src = tmp_path / "sharded"
    ref.save_pretrained(src, max_shard_size="100KB")
    assert (src / "model.safetensors.index.json").exists()
    Tokenizer.from_folder(tiny_model_dir).save(src)
    ids = torch.randint(0, 320, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = load_pretrained(src).model(ids)
        assert (got - ref(ids).logits).abs().max().item() < 1e-4


def test_bias_free_gpt2_round_trip(tmp_path: Path, tiny_model_dir: Path) -> None:
    """nanoGPT-style GPT-2 without biases: saved with zero biases transformers can load, and read
    back as the same bias-free model."""
    from llmos.checkpoint import save_pretrained
    from llmos.model import Config, Transformer

    torch.manual_seed(0)
    tok = Tokenizer.from_folder(tiny_model_dir)
    model = Transformer(Config.from_name("baby-gpt", vocab_size=tok.vocab_size)).eval()
    model.init_weights()
    folder = save_pretrained(tmp_path / "baby", model, tok)
    ids = torch.randint(0, tok.vocab_size, (1, 32), generator=torch.Generator().manual_seed(4))
    back = load_pretrained(folder).model
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert back.config.bias is False
    assert set(back.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))
        assert (ref(ids).logits - model(ids)).abs().max().item() < 1e-4
