"""Read a GGUF file (llama.cpp's format) as a Hugging Face-shaped model in memory.

We parse the header ourselves rather than with `gguf.GGUFReader`: the reader builds numpy views
for every string of the vocabulary and takes ~2 s on a 49k-token model where a direct parse takes
a fraction of that, and owning the parse lets every kind of damage (bad magic, truncation, data
past the end) surface as one clear `ModelFormatError`. The `gguf` package still supplies the
type tables (block sizes, type and file-type names).

Layout reminders (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count,
u64 metadata count, the metadata key/values, the tensor infos (name, dims with the fastest dim
first, type, offset), padding to `general.alignment`, then the tensor data.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, LlamaFileType

from llmos.checkpoint.dequant import SUPPORTED_TYPES, dequantize
from llmos.errors import ConfigError, ModelFormatError, NotFoundError

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gpt2")
_MAGIC = b"GGUF"
_MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp never writes more

# GGUF metadata value types: id → (struct format, size) for scalars.
_STRING, _ARRAY = 8, 9
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_FLOAT32 = 6


@dataclass
class GGUFModel:
    """A GGUF file as Hugging Face would hold it: config.json content, fp32 parameters by HF name,
    the tokenizer and generation settings from the metadata, and lineage information."""

    hf_config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    tokenizer_meta: dict[str, Any]
    generation_config: dict[str, Any]
    metadata: dict[str, Any]
    raw_types: dict[str, str]


@dataclass(frozen=True)
class _TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order: slowest dim first (GGUF's dims reversed)
    type_name: str
    offset: int  # absolute position in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


# ---------------------------------------------------------------------------------------------
# Header parsing


class _Header:
    """Sequential reader over the memory-mapped file; every read is bounds-checked so that a
    truncated or corrupt header becomes a ModelFormatError rather than a struct/index error."""

    def __init__(self, buf: mmap.mmap, source: str) -> None:
        self.buf, self.pos, self.size, self.source = buf, 0, len(buf), source

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: {what}")

    def _take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"file is truncated (ends inside the {what} at byte {self.pos})")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt: str, size: int, what: str) -> Any:
        return struct.unpack_from(fmt, self.buf, self._take(size, what))[0]

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        n = self.u64(what)
        start = self._take(n, what)
        try:
            return self.buf[start:start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def value(self, vtype: int, key: str) -> Any:
        if vtype == _STRING:
            return self.string(f"metadata value {key}")
        if vtype == _ARRAY:
            return self.array(key)
        if vtype not in _SCALARS:
            raise self.fail(f"metadata key {key} has unknown value type {vtype}")
        fmt, size = _SCALARS[vtype]
        value = self.scalar(fmt, size, f"metadata value {key}")
        if vtype == _FLOAT32:
            # The shortest decimal that round-trips in float32: config.json then reads 1e-05,
            # not 9.999999747378752e-06, and float32 consumers get the identical value back.
            value = float(str(np.float32(value)))
        return value

    def array(self, key: str) -> list[Any]:
        what = f"metadata array {key}"
        etype, count = self.u32(what), self.u64(what)
        if etype in _SCALARS:
            fmt, size = _SCALARS[etype]
            start = self._take(count * size, what)
            # One numpy pass instead of a Python loop: token types and scores run to 100k+ items.
            # The array view is dropped at once, which the mmap needs before it can close.
            return np.frombuffer(self.buf, dtype=np.dtype(fmt), count=count, offset=start).tolist()
        if etype == _STRING:
            # Each string needs at least its 8-byte length: reject absurd counts before looping.
            if count * 8 > self.size - self.pos:
                raise self.fail(f"file is truncated (ends inside the {what} at byte {self.pos})")
            return [self.string(what) for _ in range(count)]
        if etype == _ARRAY:
            if count * 12 > self.size - self.pos:
                raise self.fail(f"file is truncated (ends inside the {what} at byte {self.pos})")
            return [self.array(key) for _ in range(count)]
        raise self.fail(f"metadata key {key} is an array of unknown value type {etype}")


def _parse_header(buf: mmap.mmap, source: str) -> tuple[dict[str, Any], list[_TensorInfo]]:
    h = _Header(buf, source)
    if h.size < 4 or buf[:4] != _MAGIC:
        raise h.fail("not a GGUF file (bad magic)")
    h.pos = 4
    version = h.u32("version")
    if version and (version & 0xFFFF) == 0:  # a small version number read with the wrong byte order
        raise h.fail("big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise h.fail(f"GGUF version {version} is not supported (supported: 2, 3)")
    n_tensors, n_kv = h.u64("tensor count"), h.u64("metadata count")
    # The smallest key/value or tensor info takes well over 12 bytes; larger counts are garbage.
    if (n_tensors + n_kv) * 12 > h.size:
        raise h.fail(f"header claims {n_tensors} tensors and {n_kv} metadata keys, more than the file holds")

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = h.string("metadata key")
        vtype = h.u32(f"metadata type of {key}")
        if key in meta:
            raise h.fail(f"metadata key {key} appears twice")
        meta[key] = h.value(vtype, key)

    raw_infos = []
    for _ in range(n_tensors):
        name = h.string("tensor info")
        n_dims = h.u32(f"tensor info of {name}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise h.fail(f"tensor {name} has {n_dims} dimensions (expected 1 to {_MAX_DIMS})")
        dims = [h.u64(f"tensor info of {name}") for _ in range(n_dims)]
        type_id, offset = h.u32(f"tensor info of {name}"), h.u64(f"tensor info of {name}")
        raw_infos.append((name, dims, type_id, offset))

    alignment = meta.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise h.fail(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-h.pos // alignment) * alignment

    infos, seen = [], set()
    for name, dims, type_id, offset in raw_infos:
        if name in seen:
            raise h.fail(f"tensor {name} appears twice")
        seen.add(name)
        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise h.fail(f"tensor {name} has unknown ggml type id {type_id}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        if dims[0] % block:
            raise h.fail(f"tensor {name} row length {dims[0]} is not a multiple of the {qtype.name} block ({block})")
        n_elements = math.prod(dims)
        nbytes = n_elements // block * type_size
        start = data_start + offset
        if start + nbytes > h.size:
            raise h.fail(f"tensor {name} data ({nbytes} bytes at {start}) runs past the end of the file "
                         f"({h.size} bytes; truncated?)")
        infos.append(_TensorInfo(name, tuple(reversed(dims)), qtype.name, start, nbytes))
    return meta, infos


# ---------------------------------------------------------------------------------------------
# Architecture mapping: GGUF metadata → HF config, GGUF tensor names → HF names


_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_LLAMA_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GPT2_BLOCK = {
    "attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj",
}
_GPT2_TOP = {"token_embd": "transformer.wte", "position_embd": "transformer.wpe",
             "output_norm": "transformer.ln_f", "output": "lm_head"}
# HF's GPT-2 uses Conv1D, which stores linear weights [in, out]; GGUF stores them [out, in].
_GPT2_CONV1D = {"attn_qkv", "attn_output", "ffn_up", "ffn_down"}


def _is_conv1d(arch: str, role: str, hf_name: str) -> bool:
    return arch == "gpt2" and role in _GPT2_CONV1D and hf_name.endswith(".weight")


def _hf_name(arch: str, gguf_name: str, n_layer: int, source: str) -> tuple[str, str]:
    """(HF parameter name, GGUF role such as "attn_q") for a GGUF tensor name."""
    block_map, top_map = (_GPT2_BLOCK, _GPT2_TOP) if arch == "gpt2" else (_LLAMA_BLOCK, _LLAMA_TOP)
    prefix = "transformer.h" if arch == "gpt2" else "model.layers"
    m = _BLOCK.fullmatch(gguf_name)
    if m and m[2] in block_map and int(m[1]) < n_layer:
        return f"{prefix}.{int(m[1])}.{block_map[m[2]]}.{m[3]}", m[2]
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in top_map and suffix in ("weight", "bias"):
        return f"{top_map[stem]}.{suffix}", stem
    raise ModelFormatError(f"{source}: tensor {gguf_name} is not part of a {arch} model")


def _need(meta: dict[str, Any], key: str, source: str) -> int:
    """A required positive integer field (sizes and counts)."""
    value = meta.get(key)
    if value is None:
        raise ConfigError(f"{source}: missing metadata field {key}")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{source}: metadata field {key} is {value!r}, expected a positive integer")
    return value


def _number(meta: dict[str, Any], key: str, default: float, source: str) -> float:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{source}: metadata field {key} is {value!r}, expected a number")
    return float(value)


def _token_ids(meta: dict[str, Any]) -> dict[str, int]:
    ids = {}
    for ours, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                      ("pad_token_id", "padding_token_id")):
        value = meta.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int) and not isinstance(value, bool):
            ids[ours] = value
    return ids


def _rope_scaling(arch: str, meta: dict[str, Any], source: str) -> dict[str, Any] | None:
    kind = meta.get(f"{arch}.rope.scaling.type")
    factor = meta.get(f"{arch}.rope.scaling.factor")
    if kind is None and meta.get(f"{arch}.rope.scale_linear") is not None:
        # Files from before rope.scaling.* existed carried linear scaling under this key.
        kind, factor = "linear", meta[f"{arch}.rope.scale_linear"]
    if kind in (None, "none") or (kind == "linear" and factor in (None, 1.0)):
        return None
    if not isinstance(factor, int | float):
        raise ConfigError(f"{source}: rope scaling type {kind!r} without a numeric {arch}.rope.scaling.factor")
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        scaling: dict[str, Any] = {"rope_type": "yarn", "factor": float(factor)}
        original = meta.get(f"{arch}.rope.scaling.original_context_length")
        if original is not None:
            scaling["original_max_position_embeddings"] = int(original)
        for gguf_key, hf_key in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
            if f"{arch}.rope.scaling.{gguf_key}" in meta:
                scaling[hf_key] = float(meta[f"{arch}.rope.scaling.{gguf_key}"])
        return scaling
    raise ConfigError(f"{source}: {arch}.rope.scaling.type {kind!r} is not supported (supported: none, linear, yarn)")


def _llama3_divisors(theta: float, head_dim: int, scaling: dict[str, Any]) -> torch.Tensor:
    """The per-frequency divisors Hugging Face's llama3 RoPE applies (as llama.cpp's rope_freqs)."""
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    wavelen = 2 * math.pi / inv_freq
    factor, original = scaling["factor"], scaling["original_max_position_embeddings"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    smooth = (original / wavelen - low) / (high - low)
    divisors = 1.0 / ((1 - smooth) / factor + smooth)
    divisors = torch.where(wavelen < original / high, torch.ones_like(divisors), divisors)
    return torch.where(wavelen > original / low, torch.full_like(divisors, factor), divisors)


def _llama3_from_rope_freqs(divisors: torch.Tensor, theta: float, head_dim: int, original: int,
                            source: str) -> dict[str, Any] | None:
    """Recover HF's llama3 rope_scaling from the divisors llama.cpp precomputed into rope_freqs.

    The largest divisor is `factor`. Between the two wavelength cut-offs llama3 blends, and there
    s = (factor/d - 1)/(factor - 1) = original/(high-low) * (1/wavelength) - low/(high-low), a
    line we can fit. Only the ratios original:low:high are determined (scaling all three changes
    nothing), so `original` comes from the metadata or is Llama 3's 8192, and low and high follow.
    The result is checked by recomputing the divisors from it."""
    d = divisors.double()
    if d.numel() != head_dim // 2:
        raise ConfigError(f"{source}: tensor rope_freqs.weight has {d.numel()} values, expected {head_dim // 2}")
    factor = float(d.max())
    if factor <= 1.0 + 1e-6:
        return None
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    blend = (d > 1 + 1e-4) & (d < factor * (1 - 1e-4))
    if int(blend.sum()) < 2:
        raise ConfigError(f"{source}: cannot derive llama3 rope scaling from tensor rope_freqs.weight "
                          "(fewer than two blended frequencies)")
    x = (inv_freq / (2 * math.pi))[blend]  # 1 / wavelength
    s = (factor / d[blend] - 1) / (factor - 1)
    slope, intercept = (float(v) for v in np.polyfit(x.numpy(), s.numpy(), 1))
    if slope <= 0:
        raise ConfigError(f"{source}: tensor rope_freqs.weight does not follow llama3 rope scaling")
    width = original / slope  # high - low
    low = -intercept * width
    candidates = [{"rope_type": "llama3", "factor": round(factor, 4), "low_freq_factor": round(low, 4),
                   "high_freq_factor": round(low + width, 4), "original_max_position_embeddings": original},
                  {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                   "high_freq_factor": low + width, "original_max_position_embeddings": original}]
    for scaling in candidates:
        if scaling["high_freq_factor"] > scaling["low_freq_factor"] > 0 and torch.allclose(
                _llama3_divisors(theta, head_dim, scaling), d, rtol=1e-4, atol=1e-5):
            return scaling
    raise ConfigError(f"{source}: tensor rope_freqs.weight does not follow llama3 rope scaling")


def _llama_like_config(arch: str, meta: dict[str, Any], infos: dict[str, _TensorInfo],
                       source: str) -> dict[str, Any]:
    n_embd = _need(meta, f"{arch}.embedding_length", source)
    n_head = _need(meta, f"{arch}.attention.head_count", source)
    n_kv = meta.get(f"{arch}.attention.head_count_kv", n_head)
    if not isinstance(n_kv, int) or n_kv <= 0 or n_head <= 0 or n_head % n_kv:
        raise ConfigError(f"{source}: {arch}.attention.head_count_kv {n_kv!r} does not divide head_count {n_head}")
    head_dim = meta.get(f"{arch}.attention.key_length") or n_embd // n_head
    rope_dim = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise ConfigError(f"{source}: {arch}.rope.dimension_count {rope_dim} differs from the head size "
                          f"{head_dim}; partial rotary embeddings are not supported")
    theta = _number(meta, f"{arch}.rope.freq_base", 10000.0, source)
    scaling = _rope_scaling(arch, meta, source)
    hf: dict[str, Any] = {
        "model_type": arch,
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "hidden_size": n_embd,
        "intermediate_size": _need(meta, f"{arch}.feed_forward_length", source),
        "num_hidden_layers": _need(meta, f"{arch}.block_count", source),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "max_position_embeddings": _need(meta, f"{arch}.context_length", source),
        "rms_norm_eps": _number(meta, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6, source),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "vocab_size": infos["token_embd.weight"].shape[0],
        "hidden_act": "silu",
        "tie_word_embeddings": _tied(infos),
        "attention_dropout": 0.0,
    }
    if arch == "llama":
        hf["attention_bias"] = "blk.0.attn_q.bias" in infos
        hf["mlp_bias"] = False
    else:
        # Qwen2's q/k/v always carry biases; the sliding window is off in every released model.
        hf["use_sliding_window"] = False
    return hf


def _gpt2_config(meta: dict[str, Any], infos: dict[str, _TensorInfo], source: str) -> dict[str, Any]:
    n_embd, n_head = _need(meta, "gpt2.embedding_length", source), _need(meta, "gpt2.attention.head_count", source)
    if n_embd % n_head:
        raise ConfigError(f"{source}: gpt2.attention.head_count {n_head} does not divide embedding_length {n_embd}")
    n_positions = meta.get("gpt2.context_length")
    if "position_embd.weight" in infos:
        n_positions = infos["position_embd.weight"].shape[0]
    if not isinstance(n_positions, int):
        raise ConfigError(f"{source}: missing metadata field gpt2.context_length")
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": n_embd,
        "n_layer": _need(meta, "gpt2.block_count", source),
        "n_head": n_head,
        "n_inner": meta.get("gpt2.feed_forward_length") or 4 * n_embd,
        "n_positions": n_positions,
        "n_ctx": n_positions,
        "vocab_size": infos["token_embd.weight"].shape[0],
        "layer_norm_epsilon": _number(meta, "gpt2.attention.layer_norm_epsilon", 1e-5, source),
        "activation_function": "gelu_new",
        "tie_word_embeddings": _tied(infos),
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
    }


def _tied(infos: dict[str, _TensorInfo]) -> bool:
    # llama.cpp drops output.weight when the model ties it to the embedding.
    return "output.weight" not in infos


def _expected_shapes(arch: str, hf: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every HF parameter the model needs, with its HF shape, to check the file against."""
    shapes: dict[str, tuple[int, ...]] = {}
    if arch == "gpt2":
        e, inner, vocab = hf["n_embd"], hf["n_inner"], hf["vocab_size"]
        shapes |= {"transformer.wte.weight": (vocab, e), "transformer.wpe.weight": (hf["n_positions"], e),
                   "transformer.ln_f.weight": (e,), "transformer.ln_f.bias": (e,)}
        for i in range(hf["n_layer"]):
            p = f"transformer.h.{i}."
            for name, shape in (("ln_1", (e,)), ("ln_2", (e,))):
                shapes[f"{p}{name}.weight"] = shapes[f"{p}{name}.bias"] = shape
            for name, n_in, n_out in (("attn.c_attn", e, 3 * e), ("attn.c_proj", e, e),
                                      ("mlp.c_fc", e, inner), ("mlp.c_proj", inner, e)):
                shapes[f"{p}{name}.weight"], shapes[f"{p}{name}.bias"] = (n_in, n_out), (n_out,)
    else:
        e, vocab, inner = hf["hidden_size"], hf["vocab_size"], hf["intermediate_size"]
        q, kv = hf["num_attention_heads"] * hf["head_dim"], hf["num_key_value_heads"] * hf["head_dim"]
        shapes |= {"model.embed_tokens.weight": (vocab, e), "model.norm.weight": (e,)}
        for i in range(hf["num_hidden_layers"]):
            p = f"model.layers.{i}."
            shapes |= {f"{p}input_layernorm.weight": (e,), f"{p}post_attention_layernorm.weight": (e,),
                       f"{p}self_attn.q_proj.weight": (q, e), f"{p}self_attn.k_proj.weight": (kv, e),
                       f"{p}self_attn.v_proj.weight": (kv, e), f"{p}self_attn.o_proj.weight": (e, q),
                       f"{p}mlp.gate_proj.weight": (inner, e), f"{p}mlp.up_proj.weight": (inner, e),
                       f"{p}mlp.down_proj.weight": (e, inner)}
            if arch == "qwen2" or hf.get("attention_bias"):
                shapes |= {f"{p}self_attn.q_proj.bias": (q,), f"{p}self_attn.k_proj.bias": (kv,),
                           f"{p}self_attn.v_proj.bias": (kv,)}
            if hf.get("attention_bias"):
                shapes[f"{p}self_attn.o_proj.bias"] = (e,)
    if not hf["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (hf["vocab_size"], hf.get("n_embd", hf.get("hidden_size")))
    return shapes


def _unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of q/k rows for its interleaved RoPE.

    llama.cpp's converter views each head's rows as [2, head_dim/2] (HF's rotate-half halves) and
    transposes them to [head_dim/2, 2] so rotary pairs sit next to each other; transposing back
    restores HF's layout. Works for weights [rows, in] and biases [rows] alike."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------------------------
# Public entry point


def _file_type_name(meta: dict[str, Any], infos: list[_TensorInfo]) -> str:
    value = meta.get("general.file_type")
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return LlamaFileType(value).name.removeprefix("MOSTLY_").replace("ALL_F32", "F32")
        except ValueError:
            return f"unknown({value})"
    # Older files lack the key: name the file after the type holding most of its matrices.
    matrices = Counter(i.type_name for i in infos if len(i.shape) >= 2)
    return matrices.most_common(1)[0][0] if matrices else "F32"


def _read_raw(f: io.BufferedReader, info: _TensorInfo, source: str) -> torch.Tensor:
    raw = torch.empty(info.nbytes, dtype=torch.uint8)
    f.seek(info.offset)
    if f.readinto(raw.numpy()) != info.nbytes:
        # The size was checked against the header; a short read means the file shrank meanwhile.
        raise ModelFormatError(f"{source}: tensor {info.name} data is truncated")
    return raw


def _load(f: io.BufferedReader, info: _TensorInfo, source: str) -> torch.Tensor:
    raw = _read_raw(f, info, source)
    try:
        flat = dequantize(raw, info.type_name, info.n_elements)
    except ValueError as e:
        raise ModelFormatError(f"{source}: tensor {info.name}: {e}") from None
    return flat.view(info.shape)


def _open(path: Path, source: str) -> io.BufferedReader:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"{source}: no such file") from None
    except OSError as e:
        raise ModelFormatError(f"{source}: cannot read ({e.strerror})") from None


def _read_header(path: Path, source: str) -> tuple[dict[str, Any], list[_TensorInfo]]:
    with _open(path, source) as f:
        size = os.fstat(f.fileno()).st_size
        if size < 4:
            raise ModelFormatError(f"{source}: not a GGUF file ({'empty' if size == 0 else 'too short'})")
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{source}: cannot map the file ({e})") from None
        with buf:
            return _parse_header(buf, source)


def _generation_config(meta: dict[str, Any]) -> dict[str, Any]:
    generation: dict[str, Any] = _token_ids(meta)
    stops = [meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    stops = list(dict.fromkeys(s for s in stops if isinstance(s, int) and not isinstance(s, bool)))
    if len(stops) > 1:
        # Chat models end a turn with eot/eom; generation must stop on those as well as on eos.
        generation["eos_token_id"] = stops
    return generation


def _plan(arch: str, hf: dict[str, Any], infos: dict[str, _TensorInfo],
          source: str) -> list[tuple[_TensorInfo, str, str]]:
    """(tensor, HF name, GGUF role) for every tensor, after checking that the file holds exactly
    the parameters the config calls for, in the right shapes, before any data is read."""
    expected = _expected_shapes(arch, hf)
    n_layer = hf.get("n_layer", hf.get("num_hidden_layers"))
    plan = []
    for info in infos.values():
        name, role = _hf_name(arch, info.name, n_layer, source)
        shape = tuple(reversed(info.shape)) if _is_conv1d(arch, role, name) else info.shape
        if name not in expected:
            raise ModelFormatError(f"{source}: tensor {info.name} is not part of this {arch} model")
        if shape != expected[name]:
            raise ModelFormatError(f"{source}: tensor {info.name} has shape {list(info.shape)}, "
                                   f"expected {list(expected[name])} for {name}")
        plan.append((info, name, role))
    missing = sorted(set(expected) - {name for _, name, _ in plan})
    if missing:
        more = " and more" if len(missing) > 3 else ""
        raise ModelFormatError(f"{source}: missing tensor(s) for {', '.join(missing[:3])}{more}")
    return plan


def read_gguf(path: str | os.PathLike) -> GGUFModel:
    """Read a llama/qwen2/gpt2 GGUF file into Hugging Face names, layout and config, with every
    tensor dequantized to contiguous float32. Damaged or unsupported files raise
    ModelFormatError/ConfigError (NotFoundError if the file is absent) naming the file."""
    path = Path(path)
    source = str(path)
    meta, info_list = _read_header(path, source)
    infos = {i.name: i for i in info_list}

    arch = meta.get("general.architecture")
    if arch is None:
        raise ConfigError(f"{source}: missing metadata field general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(f"{source}: architecture {arch!r} is not supported "
                          f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    if "token_embd.weight" not in infos:
        raise ModelFormatError(f"{source}: missing tensor token_embd.weight")
    for info in info_list:
        if info.type_name not in SUPPORTED_TYPES:
            raise ModelFormatError(f"{source}: tensor {info.name} has type {info.type_name}, which we cannot "
                                   f"dequantize (supported: {', '.join(SUPPORTED_TYPES)})")

    hf = _gpt2_config(meta, infos, source) if arch == "gpt2" else _llama_like_config(arch, meta, infos, source)
    hf.update(_token_ids(meta))
    hf["torch_dtype"] = "float32"
    tensors, raw_types = {}, {}
    with _open(path, source) as f:
        if arch == "llama" and "rope_freqs.weight" in infos:
            # Llama 3.1+ files carry their RoPE scaling only as this tensor of precomputed factors.
            original = meta.get("llama.rope.scaling.original_context_length", 8192)
            freqs = _load(f, infos.pop("rope_freqs.weight"), source)
            hf["rope_scaling"] = _llama3_from_rope_freqs(freqs, hf["rope_theta"], hf["head_dim"], original, source)
        for info, name, role in _plan(arch, hf, infos, source):
            t = _load(f, info, source)
            if arch == "llama" and role in ("attn_q", "attn_k"):
                t = _unpermute_rotary(t, hf["num_attention_heads"] if role == "attn_q" else hf["num_key_value_heads"])
            elif _is_conv1d(arch, role, name):
                t = t.t()
            tensors[name] = t.contiguous()
            raw_types[name] = info.type_name

    metadata = {k: v for k, v in meta.items() if k.startswith("general.")}
    metadata["file_type"] = _file_type_name(meta, info_list)
    return GGUFModel(
        hf_config=hf,
        tensors=tensors,
        tokenizer_meta={k: v for k, v in meta.items() if k.startswith("tokenizer.")},
        generation_config=_generation_config(meta),
        metadata=metadata,
        raw_types=raw_types,
    )
