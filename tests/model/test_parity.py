"""Our Transformer against transformers' implementations, with the same random weights."""

from __future__ import annotations

import pytest
import torch
import transformers

from llmos.checkpoint import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from llmos.checkpoint.folder import build_model

TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=256)
CASES = {
    "gpt2": (transformers.GPT2Config, dict(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=128)),
    "llama-gqa-llama3-rope": (transformers.LlamaConfig, dict(
        TINY, num_key_value_heads=2, rope_theta=50000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})),
    "llama-linear-rope-untied": (transformers.LlamaConfig, dict(
        TINY, num_key_value_heads=4, tie_word_embeddings=False,
        rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "qwen2-qkv-bias": (transformers.Qwen2Config, dict(TINY, num_key_value_heads=1, tie_word_embeddings=True)),
    "mistral-untied": (transformers.MistralConfig, dict(TINY, num_key_value_heads=2, sliding_window=None)),
}


def reference(case: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config_cls, kwargs = CASES[case]
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**kwargs)).eval()
    # Random init leaves biases and norms at 0/1; perturb everything so the comparison covers them.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case: str) -> None:
    ref = reference(case)
    hf_config = ref.config.to_dict()
    config = config_from_hf(hf_config)
    ours = build_model(config, state_dict_from_hf(ref.state_dict(), config))
    ids = torch.randint(0, 320, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_and_config_round_trip(case: str) -> None:
    ref = reference(case)
    config = config_from_hf(ref.config.to_dict())
    ours = state_dict_from_hf(ref.state_dict(), config)
    back = state_dict_to_hf(ours, config)
    theirs = {k: v for k, v in ref.state_dict().items() if k in back}
    assert set(back) == set(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in back)
    assert config_from_hf(config_to_hf(config)) == config


def test_scaled_rope_differs_from_plain() -> None:
    """Guards the test above: the scaling variants must actually change the rotary angles."""
    from llmos.model.transformer import rope_inv_freq

    base = config_from_hf(CASES["llama-gqa-llama3-rope"][0](**TINY).to_dict())
    scaled = config_from_hf(reference("llama-gqa-llama3-rope").config.to_dict())
    assert not torch.allclose(rope_inv_freq(base.replace(rope_theta=50000.0)), rope_inv_freq(scaled))
