"""The model's own contracts: cached decoding equals the full forward, limits are enforced."""

from __future__ import annotations

import pytest
import torch

from llmos.model import Config, ContextLengthError, KVCache, Transformer


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
def test_cached_decode_equals_full_forward(preset: str) -> None:
    torch.manual_seed(0)
    config = Config.from_name(preset)
    model = Transformer(config).eval()
    model.init_weights()
    ids = torch.randint(0, config.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(config, batch_size=2, capacity=32)
        pieces = [model(ids[:, :7], cache=cache), model(ids[:, 7:12], cache=cache)]
        pieces += [model(ids[:, i:i + 1], cache=cache) for i in range(12, 20)]
    assert cache.length == 20
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_sliding_window_limits_attention() -> None:
    torch.manual_seed(0)
    config = Config.from_name("tiny-llama", sliding_window=4)
    model = Transformer(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 12))
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % config.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(changed)
    # position 11 sees only positions 8..11, so the first token cannot affect it; position 2 can
    assert torch.allclose(a[0, 11], b[0, 11])
    assert not torch.allclose(a[0, 2], b[0, 2])


def test_context_length_is_enforced() -> None:
    config = Config.from_name("tiny-llama", block_size=16)
    model = Transformer(config)
    with pytest.raises(ContextLengthError, match="exceeds the context length of 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_presets_have_published_sizes() -> None:
    with torch.device("meta"):
        sizes = {name: Transformer(Config.from_name(name)).num_parameters()
                 for name in ("gpt2", "smollm2-135m", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-3.2-1b")}
    assert sizes["gpt2"] == 124_439_808
    assert sizes["smollm2-135m"] == 134_515_008
    assert 0.49e9 < sizes["qwen2.5-0.5b"] < 0.50e9
    assert sizes["tinyllama-1.1b"] == 1_100_048_384
    assert sizes["llama-3.2-1b"] == 1_235_814_400
