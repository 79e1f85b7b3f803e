"""read_gguf against transformers' own GGUF loader (the reference), the dequantizers against
gguf-py's numpy ones, tiny llama.cpp-style files for the other architectures, and damaged files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as QT

from llmos.checkpoint.dequant import BLOCK_SIZES, dequantize
from llmos.checkpoint.gguf_file import read_gguf
from llmos.errors import ConfigError, ModelFormatError, NotFoundError

PROMPT = "The capital of France is"


# ---------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct Q4_1 file


@pytest.fixture(scope="module")
def ours(smollm2_gguf: Path):
    return read_gguf(smollm2_gguf)


@pytest.mark.slow
def test_smollm2_config_and_metadata(ours) -> None:
    hf = ours.hf_config
    assert {k: hf[k] for k in ("model_type", "architectures", "hidden_size", "intermediate_size",
                               "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                               "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
                               "vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id",
                               "hidden_act", "attention_bias", "torch_dtype")} == {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "rope_scaling": None, "vocab_size": 49152, "tie_word_embeddings": True, "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "attention_bias": False, "torch_dtype": "float32"}
    assert ours.generation_config == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    assert ours.metadata["file_type"] == "Q4_1"
    assert ours.metadata["general.architecture"] == "llama"
    assert ours.metadata["general.basename"] == "smollm2"
    assert not any(k.startswith("tokenizer.") for k in ours.metadata)

    tok = ours.tokenizer_meta
    assert tok["tokenizer.ggml.model"] == "gpt2"
    assert len(tok["tokenizer.ggml.tokens"]) == 49152 and tok["tokenizer.ggml.tokens"][:3] == [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(tok["tokenizer.ggml.merges"]) == 48900 and tok["tokenizer.ggml.merges"][0] == "Ġ t"
    assert tok["tokenizer.ggml.token_type"][:2] == [3, 3] and tok["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_start|>assistant" in tok["tokenizer.chat_template"]

    # 30 layers × 7 matrices in Q4_1, the embedding in Q8_0, 61 norms in F32.
    counts = {t: list(ours.raw_types.values()).count(t) for t in set(ours.raw_types.values())}
    assert counts == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert ours.raw_types["model.embed_tokens.weight"] == "Q8_0"
    assert ours.raw_types["model.layers.0.self_attn.q_proj.weight"] == "Q4_1"
    assert ours.tensors["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert ours.tensors["model.layers.0.mlp.down_proj.weight"].shape == (576, 1536)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in ours.tensors.values())


@pytest.mark.slow
def test_smollm2_tensors_equal_transformers(ours, hf_smollm2) -> None:
    reference = hf_smollm2[0].state_dict()
    # The tied lm_head is the embedding itself in transformers' model; we leave it out, as HF files do.
    assert set(ours.tensors) == set(reference) - {"lm_head.weight"}
    for name, tensor in ours.tensors.items():
        assert tensor.shape == reference[name].shape, name
        assert torch.equal(tensor, reference[name]) or (tensor - reference[name]).abs().max() < 1e-6, name


@pytest.mark.slow
def test_smollm2_config_agrees_with_transformers(ours, hf_smollm2) -> None:
    ref = hf_smollm2[0].config
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "vocab_size",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias"):
        assert ours.hf_config[key] == getattr(ref, key), key
    # transformers keeps the float32 bits as a float64 (9.999999747e-06); we keep their shortest form.
    assert ours.hf_config["rms_norm_eps"] == pytest.approx(ref.rms_norm_eps, rel=1e-6)
    assert ours.hf_config["rope_theta"] == ref.rope_parameters["rope_theta"]


@pytest.mark.slow
def test_smollm2_logits_equal_transformers(ours, hf_smollm2) -> None:
    reference, tokenizer = hf_smollm2
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**ours.hf_config)).eval()
    missing, unexpected = model.load_state_dict(ours.tensors, strict=False)
    assert (missing, unexpected) == (["lm_head.weight"], [])  # tied: it is the embedding
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    assert ids.shape[1] == 5
    with torch.no_grad():
        logits, expected = model(ids).logits, reference(ids).logits
    assert (logits - expected).abs().max().item() < 1e-4
    assert tokenizer.decode(logits[0, -1].argmax().item()) == " Paris"


@pytest.mark.slow
def test_kernels_match_gguf_on_real_tensors(smollm2_gguf: Path) -> None:
    reader = gguf.GGUFReader(smollm2_gguf)
    picked = {}
    for t in reader.tensors:
        picked.setdefault(t.tensor_type.name, t)
    assert set(picked) == {"Q8_0", "Q4_1", "F32"}
    for type_name, t in picked.items():
        raw = torch.from_numpy(np.ascontiguousarray(t.data).view(np.uint8).reshape(-1).copy())
        ours = dequantize(raw, type_name, int(t.n_elements))
        expected = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1).copy())
        assert ours.shape == expected.shape and torch.equal(ours, expected), (type_name, t.name)


# ---------------------------------------------------------------------------------------------
# Dequantization kernels on blocks made from random data


def _random_blocks(qtype: QT, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes of `n_blocks` blocks of `qtype`, made by gguf-py's quantizer where it has one."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    values = rng.standard_normal(n_blocks * block).astype(np.float32)
    if qtype == QT.F16:
        return values.astype(np.float16).view(np.uint8)
    if qtype in (QT.Q4_0, QT.Q4_1, QT.Q8_0, QT.BF16):
        return gguf.quants.quantize(values.reshape(1, -1), qtype).view(np.uint8).reshape(-1)
    # gguf-py cannot quantize K-quants: random bytes are valid blocks once the fp16 super-block
    # scales are finite, so overwrite those with plausible values.
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scale_bytes = {QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,)}[qtype]
    for at in scale_bytes:
        scales = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16)
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


@pytest.mark.parametrize("type_name", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"])
def test_kernels_match_gguf_quants(type_name: str) -> None:
    qtype = QT[type_name]
    rng = np.random.default_rng(list(BLOCK_SIZES).index(type_name))
    raw = _random_blocks(qtype, 96, rng)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    expected = gguf.quants.dequantize(raw.reshape(1, -1), qtype).reshape(-1).astype(np.float32)
    ours = dequantize(torch.from_numpy(raw.copy()), type_name, 96 * block)
    assert ours.dtype == torch.float32 and ours.shape == (96 * block,)
    assert np.abs(expected).max() > 0.01  # non-trivial data
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_dequantize_rejects_wrong_sizes_and_types() -> None:
    with pytest.raises(ValueError, match="Q5_0"):
        dequantize(torch.zeros(22, dtype=torch.uint8), "Q5_0", 32)
    with pytest.raises(ValueError, match="do not hold"):
        dequantize(torch.zeros(19, dtype=torch.uint8), "Q4_1", 32)


# ---------------------------------------------------------------------------------------------
# Tiny models written the way llama.cpp's converter writes them


def _tiny_hf(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "gpt2":
        # transformers' GGUF loader only knows n_ctx, so keep GPT-2's default 1024 positions.
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=1024,
                                         bos_token_id=0, eos_token_id=1)
        model = transformers.GPT2LMHeadModel(config)
    else:
        cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[arch]
        config = cls[0](hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=64, max_position_embeddings=256, rms_norm_eps=1e-6,
                        rope_theta=10000.0, tie_word_embeddings=arch == "qwen2", bos_token_id=0, eos_token_id=1)
        model = cls[1](config)
    with torch.no_grad():
        for p in model.parameters():
            # Random norms/biases (not 1/0) so a misplaced one shows; fp16-exact so F16 storage is lossless.
            p.copy_(torch.randn_like(p).mul_(0.2).half().float())
    return model.eval()


def _to_llama_cpp(arch: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """GGUF names and layout, as convert_hf_to_gguf.py produces them."""
    c, out = model.config, {}
    sd = model.state_dict()
    if arch == "gpt2":
        top = {"transformer.wte": "token_embd", "transformer.wpe": "position_embd", "transformer.ln_f": "output_norm"}
        block = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
                 "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        prefix = "transformer.h."
    else:
        top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
        block = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
        prefix = "model.layers."
    for name, t in sd.items():
        stem, suffix = name.rsplit(".", 1)
        if name == "lm_head.weight" and c.tie_word_embeddings and arch != "gpt2":
            continue
        if stem.startswith(prefix):
            layer, rest = stem[len(prefix):].split(".", 1)
            gguf_name, role = f"blk.{layer}.{block[rest]}.{suffix}", block[rest]
        elif name == "lm_head.weight":
            gguf_name, role = "output.weight", "output"  # llama.cpp writes GPT-2's tied head out in full
        else:
            gguf_name, role = f"{top[stem]}.{suffix}", top[stem]
        if arch == "llama" and role in ("attn_q", "attn_k"):
            n = c.num_attention_heads if role == "attn_q" else c.num_key_value_heads
            t = t.reshape(n, 2, t.shape[0] // n // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)
        if arch == "gpt2" and suffix == "weight" and role in ("attn_qkv", "attn_output", "ffn_up", "ffn_down"):
            t = t.t()
        out[gguf_name] = t.contiguous()
    return out


def _write_gguf(path: Path, arch: str, tensors: dict[str, torch.Tensor], meta: dict[str, object],
                types: dict[str, QT] | None = None) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    for key, value in meta.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    for name, t in tensors.items():
        qtype = (types or {}).get(name, QT.F32 if t.ndim == 1 else QT.F16)
        data = t.numpy().astype(np.float32)
        if qtype == QT.F16:
            writer.add_tensor(name, data.astype(np.float16))
        elif qtype == QT.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tiny_meta(arch: str, model: torch.nn.Module) -> dict[str, object]:
    c = model.config
    meta: dict[str, object] = {"general.name": f"tiny-{arch}", "general.file_type": 1,
                               "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": [f"t{i}" for i in range(64)],
                               "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1}
    if arch == "gpt2":
        meta |= {"gpt2.block_count": c.n_layer, "gpt2.context_length": c.n_positions, "gpt2.embedding_length": c.n_embd,
                 "gpt2.feed_forward_length": 4 * c.n_embd, "gpt2.attention.head_count": c.n_head,
                 "gpt2.attention.layer_norm_epsilon": c.layer_norm_epsilon}
    else:
        meta |= {f"{arch}.block_count": c.num_hidden_layers, f"{arch}.context_length": c.max_position_embeddings,
                 f"{arch}.embedding_length": c.hidden_size, f"{arch}.feed_forward_length": c.intermediate_size,
                 f"{arch}.attention.head_count": c.num_attention_heads,
                 f"{arch}.attention.head_count_kv": c.num_key_value_heads,
                 f"{arch}.rope.freq_base": 10000.0, f"{arch}.attention.layer_norm_rms_epsilon": c.rms_norm_eps}
    return meta


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_tiny_llama_cpp_files_round_trip(arch: str, tmp_path: Path) -> None:
    original = _tiny_hf(arch)
    path = _write_gguf(tmp_path / f"tiny-{arch}.gguf", arch, _to_llama_cpp(arch, original),
                       _tiny_meta(arch, original))
    got = read_gguf(path)

    # transformers' own loader reads the same file as the original model: our writer follows
    # llama.cpp's conventions (q/k permutation for llama only, Conv1D transposes for GPT-2).
    via_transformers = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=path.name, dtype=torch.float32).state_dict()
    expected = original.state_dict()
    for name, tensor in got.tensors.items():
        assert torch.equal(tensor, expected[name]), name
        assert torch.equal(via_transformers[name], expected[name]), name
    tied = {"lm_head.weight"} if original.config.tie_word_embeddings and arch != "gpt2" else set()
    assert set(got.tensors) == set(expected) - tied

    # Our config builds the same network.
    config = transformers.AutoConfig.for_model(**got.hf_config)
    rebuilt = transformers.AutoModelForCausalLM.from_config(config).eval()
    missing, unexpected = rebuilt.load_state_dict(got.tensors, strict=False)
    assert (set(missing), unexpected) == (tied, [])
    ids = torch.tensor([[3, 14, 15, 9, 26, 5]])
    with torch.no_grad():
        assert (rebuilt(ids).logits - original(ids).logits).abs().max().item() < 1e-5
    assert got.hf_config["tie_word_embeddings"] == bool(tied)
    assert got.metadata["file_type"] == "F16" and got.metadata["general.name"] == f"tiny-{arch}"
    assert set(got.raw_types.values()) == {"F16", "F32"}


def _llama3_rope_freqs(theta: float, head_dim: int, factor: float, low: float, high: float,
                       original: int) -> torch.Tensor:
    # As llama.cpp's converter computes them for Llama 3.1+ (divisors of each rotary frequency).
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * np.pi * theta ** (i / head_dim)
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def _tiny_llama_file(tmp_path: Path, extra: dict[str, torch.Tensor], meta: dict[str, object] | None = None,
                     types: dict[str, QT] | None = None, name: str = "tiny.gguf") -> Path:
    model = _tiny_hf("llama")
    return _write_gguf(tmp_path / name, "llama", {**_to_llama_cpp("llama", model), **extra},
                       {**_tiny_meta("llama", model), **(meta or {})}, types)


def test_llama3_rope_freqs_become_rope_scaling(tmp_path: Path) -> None:
    # Llama 3.2's settings; 16-dim heads of the tiny model need a small theta to put two or more
    # frequencies in the blended band.
    theta, head_dim = 30.0, 16
    freqs = _llama3_rope_freqs(theta, head_dim, 32.0, 1.0, 4.0, 64)
    assert ((freqs > 1) & (freqs < 32)).sum() >= 2
    path = _tiny_llama_file(tmp_path, {"rope_freqs.weight": freqs},
                            {"llama.rope.freq_base": theta, "llama.rope.scaling.original_context_length": 64})
    got = read_gguf(path)
    assert got.hf_config["rope_scaling"] == {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    assert "rope_freqs.weight" not in got.raw_types

    bad = _tiny_llama_file(tmp_path, {"rope_freqs.weight": torch.linspace(1.0, 3.0, head_dim // 2) ** 3},
                           {"llama.rope.freq_base": theta}, name="bad-rope.gguf")
    with pytest.raises(ConfigError, match=r"bad-rope\.gguf.*rope_freqs"):
        read_gguf(bad)


def test_quantized_tiny_file_matches_gguf_dequantization(tmp_path: Path) -> None:
    types = {"token_embd.weight": QT.Q8_0, "blk.0.ffn_down.weight": QT.Q4_0, "blk.1.ffn_up.weight": QT.BF16}
    path = _tiny_llama_file(tmp_path, {}, types=types)
    got = read_gguf(path)
    assert got.raw_types["model.embed_tokens.weight"] == "Q8_0"
    assert got.raw_types["model.layers.0.mlp.down_proj.weight"] == "Q4_0"
    assert got.raw_types["model.layers.1.mlp.up_proj.weight"] == "BF16"
    for t in gguf.GGUFReader(path).tensors:
        if t.name in types:
            expected = gguf.quants.dequantize(t.data, t.tensor_type)
            hf_name = {"token_embd.weight": "model.embed_tokens.weight",
                       "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
                       "blk.1.ffn_up.weight": "model.layers.1.mlp.up_proj.weight"}[t.name]
            assert torch.equal(got.tensors[hf_name], torch.from_numpy(expected.copy())), t.name


# ---------------------------------------------------------------------------------------------
# Files we cannot or must not load


def test_unsupported_tensor_type_names_tensor_and_type(tmp_path: Path) -> None:
    path = _tiny_llama_file(tmp_path, {}, types={"blk.1.attn_v.weight": QT.Q5_0}, name="q5.gguf")
    with pytest.raises(ModelFormatError, match=r"q5\.gguf.*blk\.1\.attn_v\.weight.*Q5_0"):
        read_gguf(path)


def test_unknown_architecture_and_tensor(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "mamba.gguf", "mamba", {"token_embd.weight": torch.zeros(8, 32)}, {})
    with pytest.raises(ConfigError, match=r"mamba\.gguf.*'mamba' is not supported"):
        read_gguf(path)
    extra = _tiny_llama_file(tmp_path, {"blk.0.attn_qkv.weight": torch.zeros(64, 64)}, name="extra.gguf")
    with pytest.raises(ModelFormatError, match=r"extra\.gguf: tensor blk\.0\.attn_qkv\.weight"):
        read_gguf(extra)


def test_missing_tensor_and_bad_shape(tmp_path: Path) -> None:
    model = _tiny_hf("llama")
    tensors = _to_llama_cpp("llama", model)
    del tensors["blk.1.ffn_gate.weight"]
    path = _write_gguf(tmp_path / "missing.gguf", "llama", tensors, _tiny_meta("llama", model))
    with pytest.raises(ModelFormatError, match=r"missing\.gguf: missing tensor.*layers\.1\.mlp\.gate_proj"):
        read_gguf(path)
    meta = {**_tiny_meta("llama", model), "llama.feed_forward_length": 128}
    path = _write_gguf(tmp_path / "shape.gguf", "llama", _to_llama_cpp("llama", model), meta)
    with pytest.raises(ModelFormatError, match=r"shape\.gguf: tensor blk\.0\.ffn_\w+\.weight has shape"):
        read_gguf(path)


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["first-1mb", "minus-1000"])
def test_truncated_copies_of_the_real_file(smollm2_gguf: Path, tmp_path: Path, cut: str) -> None:
    path = tmp_path / f"smollm2-{cut}.gguf"
    if cut == "first-1mb":
        with open(smollm2_gguf, "rb") as f:
            path.write_bytes(f.read(1 << 20))
        message = "truncated"
    else:
        shutil.copyfile(smollm2_gguf, path)
        os.truncate(path, smollm2_gguf.stat().st_size - 1000)
        message = "runs past the end of the file"
    with pytest.raises(ModelFormatError, match=rf"smollm2-{cut}\.gguf.*{message}") as info:
        read_gguf(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"GGU", "too short"),
    (b"PK\x03\x04" + bytes(60), "bad magic"),
    (b"GGUF" + (1).to_bytes(4, "little") + bytes(16), "version 1"),
    (b"GGUF" + (3).to_bytes(4, "big") + bytes(16), "big-endian"),
    (b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (1 << 40).to_bytes(8, "little"),
     "more than the file holds"),
    (b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
     + (100).to_bytes(8, "little") + b"general", "truncated"),
])
def test_damaged_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "damaged.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=rf"damaged\.gguf: .*{message}"):
        read_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nothere\.gguf: no such file"):
        read_gguf(tmp_path / "nothere.gguf")
