"""Swap a model's linear layers (and its output head) for quantized ones.

GGUF files already hold quantized blocks; `read_gguf_blocks` lifts them out in our layout (q/k
rows un-permuted, q/k/v and gate/up fused) so `quantize_model` can load them as they are
instead of re-quantizing the dequantized fp32 copy, which would add a second rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llmos.engine.quant.kernels import QK
from llmos.engine.quant.linear import GGUF_LAYOUTS, MODES, DenseLinear, QuantLinear
from llmos.errors import ConfigError
from llmos.model import Config, Transformer


@dataclass
class GGUFBlocks:
    """Raw GGUF block bytes of one weight matrix: `data` is uint8 [out_features, bytes per row]."""

    data: torch.Tensor
    ggml_type: str
    shape: tuple[int, int]  # (out_features, in_features)


def _quantized(weight: torch.Tensor, bias: torch.Tensor | None, mode: str,
               raw: GGUFBlocks | None) -> nn.Module:
    if mode == "fp32":
        return DenseLinear(weight, bias)
    # Blocks a GGUF file already holds in a layout of ours are kept as they are, whatever the
    # mode: Q4 weights gain nothing from int8, and Q8_0 turned into int4 would lose precision.
    if raw is not None and raw.ggml_type in GGUF_LAYOUTS and tuple(raw.shape) == tuple(weight.shape):
        return QuantLinear.from_gguf_blocks(raw.data, raw.ggml_type, raw.shape, bias)
    return QuantLinear.from_float(weight, bias, mode)


def quantize_model(model: Transformer, mode: str | None, gguf_raw: dict[str, GGUFBlocks] | None = None,
                   head_mode: str | None = None) -> Transformer:
    """Replace every nn.Linear by a QuantLinear (int8/int4) or DenseLinear (fp32), in place.

    `mode` is "int8", "int4", "fp32" (weights unchanged, our matrix-vector kernel) or
    "none"/None (model returned untouched). `gguf_raw` maps our parameter names
    ("blocks.0.attn.qkv.weight", "tok_emb.weight", ...) to raw blocks (see `read_gguf_blocks`).
    A tied model gets its own head module over the embedding matrix (a quantized copy, or the
    shared fp32 tensor). `head_mode` defaults to int8 for the int modes (the head is the most
    sensitive matrix: int4 costs SmolLM2 +5% perplexity, int8 +0.1%; llama.cpp's 4-bit files
    keep it at 8 bits too) and fp32 for fp32. Layers whose in_features is not a multiple of 32
    stay nn.Linear in the int modes.
    """
    if mode in (None, "none"):
        return model
    if mode not in (*MODES, "fp32"):
        raise ConfigError(f"unknown quantization {mode!r} (expected int8, int4, fp32 or none)")
    head_mode = head_mode or ("fp32" if mode == "fp32" else "int8")
    if head_mode not in (*MODES, "fp32"):
        raise ConfigError(f"unknown head quantization {head_mode!r} (expected int8, int4 or fp32)")
    raw = gguf_raw or {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        layer_mode = head_mode if name == "lm_head" else mode
        if layer_mode != "fp32" and module.in_features % QK:
            continue
        parent, _, child = name.rpartition(".")
        q = _quantized(module.weight, module.bias, layer_mode, raw.get(f"{name}.weight"))
        setattr(model.get_submodule(parent) if parent else model, child, q)
    if model.lm_head is None and (head_mode == "fp32" or model.config.n_embd % QK == 0):
        model.lm_head = _quantized(model.tok_emb.weight, None, head_mode, raw.get("tok_emb.weight"))
    return model


# --- GGUF ---------------------------------------------------------------------------------------

# Our linear layers and the GGUF tensors whose rows they stack, per architecture family.
_LLAMA = {"attn.qkv": ("attn_q", "attn_k", "attn_v"), "attn.proj": ("attn_output",),
          "mlp.up": ("ffn_gate", "ffn_up"), "mlp.down": ("ffn_down",)}
_GPT2 = {"attn.qkv": ("attn_qkv",), "attn.proj": ("attn_output",), "mlp.up": ("ffn_up",),
         "mlp.down": ("ffn_down",)}


def _unpermute_rows(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's interleaving of q/k rows for its rotary layout. It only reorders whole
    rows, so it applies to block bytes as well as to floats."""
    n = rows.shape[0]
    return rows.reshape(n_head, n // n_head // 2, 2, -1).transpose(1, 2).reshape(n, -1)


def read_gguf_blocks(path: str | os.PathLike, config: Config) -> dict[str, GGUFBlocks]:
    """The Q8_0/Q4_0/Q4_1 weight matrices of a llama/qwen2/mistral/gpt2 GGUF file, as our
    parameter names and layout. Matrices in other types (and fused layers whose parts differ in
    type) are left out: `quantize_model` quantizes those from the float weights."""
    from gguf import GGUFReader

    reader = GGUFReader(Path(path))
    arch = str(reader.fields["general.architecture"].contents())
    tensors = {t.name: t for t in reader.tensors}
    parts = _GPT2 if arch == "gpt2" else _LLAMA
    out: dict[str, GGUFBlocks] = {}

    def take(gguf_name: str) -> tuple[torch.Tensor, str] | None:
        t = tensors.get(gguf_name)
        if t is None or t.tensor_type.name not in GGUF_LAYOUTS:
            return None
        # The reader maps the file read-only; copy the bytes out as [rows, bytes per row].
        n_rows = int(t.shape[1]) if len(t.shape) > 1 else 1
        return torch.from_numpy(t.data.reshape(n_rows, -1).copy()), t.tensor_type.name

    for i in range(config.n_layer):
        for ours, theirs in parts.items():
            got = [take(f"blk.{i}.{n}.weight") for n in theirs]
            if any(g is None for g in got) or len({g[1] for g in got}) != 1:
                continue
            rows = [g[0] for g in got]
            if arch == "llama" and ours == "attn.qkv":  # only llama's converter permutes q/k
                rows[0] = _unpermute_rows(rows[0], config.n_head)
                rows[1] = _unpermute_rows(rows[1], config.n_kv_head)
            data = torch.cat(rows) if len(rows) > 1 else rows[0]
            K = data.shape[1] // GGUF_LAYOUTS[got[0][1]][1] * QK
            out[f"blocks.{i}.{ours}.weight"] = GGUFBlocks(data, got[0][1], (data.shape[0], K))
    for gguf_name, ours in (("token_embd.weight", "tok_emb.weight"), ("output.weight", "lm_head.weight")):
        if (got := take(gguf_name)) is not None:
            K = got[0].shape[1] // GGUF_LAYOUTS[got[1]][1] * QK
            out[ours] = GGUFBlocks(got[0], got[1], (got[0].shape[0], K))
    return out
