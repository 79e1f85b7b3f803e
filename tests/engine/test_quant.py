"""Quantized linear layers: kernels against float references, GGUF blocks against gguf's own
dequantization, the PyTorch fallback against the kernels, and whole-model quantization."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from llmos.engine.quant import DenseLinear, QuantLinear, kernels, quantize_model, read_gguf_blocks
from llmos.engine.quant.linear import KERNEL_MAX_ROWS
from llmos.errors import ConfigError
from llmos.model import Config, Transformer

KERNEL = kernels.load()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="C++ kernels unavailable (fallback only)")
ISAS = [0, 1] if KERNEL == "avx512-vnni" else [0]


@pytest.fixture(params=ISAS, ids=lambda i: ["avx2", "vnni"][i])
def isa(request: pytest.FixtureRequest):
    """Run a kernel test on every instruction-set family this CPU has."""
    before = torch.ops.llmos_quant.set_isa(request.param)
    yield request.param
    torch.ops.llmos_quant.set_isa(before)


def quantized_activations(x: torch.Tensor) -> torch.Tensor:
    """x after the kernels' int8 rounding per block of 32 (same fp32 operations, same rounding)."""
    b = x.view(x.shape[0], -1, 32)
    amax = b.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0) / amax, 0.0)
    return (torch.round(b * inv) * (amax / 127)).view_as(x)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


def random_layer(mode: str, N: int, K: int, bias: bool = True, seed: int = 0) -> QuantLinear:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g) * 0.05
    w[:, :32] += 0.3  # a block whose values are all positive: exercises the q4 offset
    b = torch.randn(N, generator=g) if bias else None
    return QuantLinear.from_float(w, b, mode)


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("M", [1, 8, 100])
def test_layer_matches_dequantized_reference(mode: str, M: int) -> None:
    layer = random_layer(mode, 200, 320)
    x = torch.randn(3, M, 320, generator=torch.Generator().manual_seed(M))
    ref = F.linear(x, layer.dequantize(), layer.bias)
    y = layer(x)
    assert y.shape == (3, M, 200)
    # Up to KERNEL_MAX_ROWS rows the kernel rounds the activations to int8 (~0.5-1% error);
    # beyond, dequantize + sgemm is exact up to fp32 summation order.
    kernel_rows = KERNEL is not None and 3 * M <= KERNEL_MAX_ROWS
    assert rel_err(y, ref) < (2e-2 if kernel_rows else 1e-6)


@needs_kernel
@pytest.mark.parametrize("fmt", ["q4", "q8"])
@pytest.mark.parametrize("N,K", [(1, 32), (7, 96), (130, 288), (64, 1536)])
def test_kernel_equals_reference_on_rounded_activations(isa: int, fmt: str, N: int, K: int) -> None:
    """With the same int8 rounding of x applied to the reference, only summation order differs."""
    layer = random_layer("int4" if fmt == "q4" else "int8", N, K)
    w = layer.dequantize()
    for M in (1, 2, 3, 4, 5, 8, 13, 32):
        x = torch.randn(M, K) * torch.rand(M, K) * 3
        x[0, :32] = 0.0  # an all-zero block: scale 0
        ref = F.linear(quantized_activations(x).double(), w.double(), layer.bias.double())
        y = layer(x)
        assert (y - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-6


@needs_kernel
def test_q8_kernel_handles_minus_128(isa: int) -> None:
    """GGUF Q8_0 may hold -128 (ours never writes it); the sign trick must still be exact."""
    qs = torch.full((4, 64), -128, dtype=torch.int8)
    d = torch.full((4, 2), 0.01, dtype=torch.float16)
    layer = QuantLinear("q8", qs, d)
    x = torch.randn(1, 64)
    ref = F.linear(quantized_activations(x), layer.dequantize())
    assert torch.allclose(layer(x), ref, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_fallback_equals_kernel(mode: str) -> None:
    layer = random_layer(mode, 96, 256)
    m = layer.m
    # The extension's dequantization and the PyTorch one are the same operations: bit-identical.
    c_deq = layer.dequantize()
    t_deq = kernels.dequantize_q4(layer.qs, layer.d, m) if mode == "int4" else kernels.dequantize_q8(layer.qs, layer.d)
    assert torch.equal(c_deq, t_deq)
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    fast = layer(x)
    slow = copy.deepcopy(layer)
    slow._kernel = None
    assert torch.allclose(slow(x), kernels.reference_linear(layer.fmt, x, layer.qs, layer.d, m, layer.bias))
    assert rel_err(fast, slow(x)) < 2e-2


def test_fallback_when_kernels_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_QUANT_KERNEL", "torch")
    kernels.load.cache_clear()
    try:
        assert kernels.load() is None
        layer = random_layer("int4", 40, 64)
        assert layer._kernel is None
        x = torch.randn(2, 64)
        assert torch.allclose(layer(x), F.linear(x, layer.dequantize(), layer.bias), atol=1e-6)
    finally:
        kernels.load.cache_clear()
        monkeypatch.undo()
        kernels.load()


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_from_float_rounding_error(mode: str) -> None:
    w = torch.randn(64, 256) * 0.1
    layer = QuantLinear.from_float(w, None, mode)
    err = (layer.dequantize() - w).abs().view(64, 8, 32)
    step = layer.scales()[0].float()[..., None]
    # Half a quantization step, plus the fp16 rounding of the int4 block minimum.
    slack = 1e-3 * w.abs().view(64, 8, 32).amax(-1, keepdim=True)
    assert (err <= step / 2 + slack).all()


def test_dtype_casts_leave_the_blocks_alone() -> None:
    """model.to(torch.bfloat16) must not round the fp16 scales; outputs follow x's dtype."""
    layer = random_layer("int4", 64, 128)
    before = layer.dequantize()
    layer.to(torch.bfloat16)
    assert torch.equal(layer.dequantize(), before)
    x = torch.randn(2, 128)
    with torch.inference_mode():
        y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert rel_err(y.float(), F.linear(x, before, layer.bias.float())) < 3e-2


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_blocks_load_exactly(type_name: str) -> None:
    """Blocks written by gguf's own quantizer dequantize to exactly gguf's values."""
    qtype = GGMLQuantizationType[type_name]
    w = (np.random.default_rng(0).standard_normal((48, 160)) * 0.02).astype(np.float32)
    raw = gguf_quantize(w, qtype)
    layer = QuantLinear.from_gguf_blocks(raw, qtype, (48, 160))
    assert layer.fmt == ("q8" if type_name == "Q8_0" else "q4")
    expected = torch.from_numpy(gguf_dequantize(raw, qtype))
    assert torch.equal(layer.dequantize(), expected)


def test_gguf_blocks_reject_other_types_and_sizes() -> None:
    with pytest.raises(ValueError, match="Q6_K"):
        QuantLinear.from_gguf_blocks(np.zeros(210, np.uint8), "Q6_K", (1, 256))
    with pytest.raises(ValueError, match="does not hold"):
        QuantLinear.from_gguf_blocks(np.zeros(20, np.uint8), "Q4_1", (2, 32))


@pytest.mark.slow
def test_smollm2_blocks_match_gguf_dequantize(smollm2_gguf) -> None:
    """Real Q4_1 and Q8_0 tensors of the SmolLM2 file load as exactly gguf's values."""
    reader = GGUFReader(smollm2_gguf)
    wanted = {"blk.0.attn_q.weight", "blk.7.ffn_down.weight", "blk.29.ffn_gate.weight", "token_embd.weight"}
    seen = set()
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        shape = (int(t.shape[1]), int(t.shape[0]))
        layer = QuantLinear.from_gguf_blocks(t.data, t.tensor_type, shape)
        expected = torch.from_numpy(gguf_dequantize(t.data, t.tensor_type)).view(shape)
        assert torch.equal(layer.dequantize(), expected), t.name
        seen.add(t.tensor_type.name)
    assert seen == {"Q4_1", "Q8_0"}


@pytest.mark.slow
def test_smollm2_quantized_model(smollm2_gguf) -> None:
    """The fused/un-permuted raw blocks stand for exactly the loader's fp32 weights, and the
    int4 model (the file's own blocks, no re-quantization) predicts like the fp32 one."""
    from llmos.checkpoint import load_gguf

    loaded = load_gguf(smollm2_gguf)
    model = loaded.model.eval()
    raw = read_gguf_blocks(smollm2_gguf, model.config)
    assert len(raw) == 4 * model.config.n_layer + 1  # every layer matrix + token_embd
    state = model.state_dict()
    for name in ("blocks.0.attn.qkv.weight", "blocks.11.mlp.up.weight", "blocks.29.attn.proj.weight",
                 "tok_emb.weight"):
        b = raw[name]
        got = QuantLinear.from_gguf_blocks(b.data, b.ggml_type, b.shape).dequantize()
        assert torch.allclose(got, state[name], rtol=0, atol=1e-6), name
    text = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It is named after the engineer"
    ids = torch.tensor([loaded.tokenizer.encode(text)])
    with torch.inference_mode():
        ref = model(ids).log_softmax(-1)
        q = quantize_model(copy.deepcopy(model), "int4", raw)
        assert isinstance(q.lm_head, QuantLinear) and q.lm_head.fmt == "q8"  # Q8_0 kept as is
        assert q.blocks[0].mlp.up.fmt == "q4"
        out = q(ids).log_softmax(-1)  # few rows: the int8-activation kernel path
    kl = (ref.exp() * (ref - out)).sum(-1).mean().item()
    assert kl < 0.01
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("mode,tol", [("int8", 0.01), ("int4", 0.1)])
def test_quantize_model_keeps_logits_close(mode: str, tol: float) -> None:
    torch.manual_seed(0)
    config = Config.from_name("tiny-llama")
    model = Transformer(config).eval()
    model.init_weights()
    ids = torch.randint(0, config.vocab_size, (2, 16))
    with torch.inference_mode():
        ref = model(ids)
        q = quantize_model(copy.deepcopy(model), mode)
        linears = [m for m in q.modules() if isinstance(m, torch.nn.Linear)]
        assert not linears and isinstance(q.lm_head, QuantLinear)
        assert isinstance(q.blocks[1].attn.qkv, QuantLinear) and q.blocks[1].attn.qkv.fmt == mode.replace("int", "q")
        out = q(ids)
        assert rel_err(out, ref) < tol
        # Cached one-token decoding (the kernel path) agrees with the full forward.
        from llmos.model import KVCache

        cache = KVCache(config, 2, capacity=16)
        steps = [q(ids[:, :8], cache=cache)] + [q(ids[:, i:i + 1], cache=cache) for i in range(8, 16)]
        assert rel_err(torch.cat(steps, 1), out) < 0.02


def test_quantize_model_modes() -> None:
    model = Transformer(Config.from_name("tiny-llama"))
    assert quantize_model(model, "none") is model and model.lm_head is None
    with pytest.raises(ConfigError, match="int3"):
        quantize_model(model, "int3")
    quantize_model(model, "int4", head_mode="fp32")
    assert isinstance(model.lm_head, DenseLinear) and model.lm_head.weight is model.tok_emb.weight
    assert isinstance(model.blocks[0].mlp.down, QuantLinear)


@pytest.mark.parametrize("M", [1, 5, 16, 40])
def test_dense_linear_matches_f_linear(M: int) -> None:
    g = torch.Generator().manual_seed(M)
    w, b = torch.randn(70, 96, generator=g), torch.randn(70, generator=g)
    layer = DenseLinear(w, b)
    x = torch.randn(2, M, 96, generator=g)
    with torch.inference_mode():
        assert torch.allclose(layer(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    odd = DenseLinear(torch.randn(3, 13, generator=g))  # K not a multiple of 8: BLAS
    with torch.inference_mode():
        assert torch.allclose(odd(x[..., :13]), F.linear(x[..., :13], odd.weight), atol=1e-6)


def test_fp32_mode_shares_weights_and_trains() -> None:
    torch.manual_seed(0)
    config = Config.from_name("tiny-llama")
    model = Transformer(config)
    model.init_weights()
    ids = torch.randint(0, config.vocab_size, (2, 12))
    with torch.inference_mode():
        ref = model(ids)
    weight = model.blocks[0].attn.qkv.weight
    quantize_model(model, "fp32")
    assert model.blocks[0].attn.qkv.weight is weight  # no copy, same parameter names
    assert set(model.state_dict()) - {"lm_head.weight"} == set(Transformer(config).state_dict())
    with torch.inference_mode():
        assert torch.allclose(model(ids[:, :1]), ref[:, :1], atol=1e-5)
        assert torch.allclose(model(ids), ref, atol=1e-5)
    model(ids).sum().backward()  # grad mode goes through F.linear
    assert weight.grad is not None
