"""One decoder-only Transformer for every family: GPT-2 and Llama (Qwen2, Mistral, SmolLM2, ...).

The config switches between LayerNorm and RMSNorm, GELU and SwiGLU MLPs, learned positions and
RoPE, and biases. Q/K/V and gate/up are fused into one matrix each, so a decode step runs two
matrix-vector products per sub-layer instead of five. Training, evaluation and generation all
call `Transformer.forward`; generation passes a KV cache and position ids.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmos.errors import LlmosError
from llmos.model.config import Config


class ContextLengthError(LlmosError):
    """A sequence longer than the model's block size (or the cache's capacity)."""


class KVCache:
    """A contiguous per-layer key/value cache, [batch, n_kv_head, capacity, head_dim] per layer.

    The model drives any cache through three calls: `begin(B, T)` gives the new tokens' positions
    and the key length to attend over, `update(layer, k, v)` stores one layer's new keys/values
    and returns all of them, `end(T)` commits the step. Here every row has the same length; the
    engine's batched cache keeps one length per row and answers `ragged=True`.
    """

    def __init__(self, config: Config, batch_size: int, capacity: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        self.capacity = capacity or config.block_size
        shape = (batch_size, config.n_kv_head, self.capacity, config.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.length = 0

    def begin(self, batch: int, n_new: int) -> tuple[torch.Tensor, int, bool]:
        """(position ids [B, T], key length after this step, ragged rows?)"""
        end = self.length + n_new
        if end > self.capacity:
            raise ContextLengthError(f"sequence of {end} tokens exceeds the cache capacity of {self.capacity}")
        positions = torch.arange(self.length, end, device=self.k[0].device).expand(batch, n_new)
        return positions, end, False

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def end(self, n_new: int) -> None:
        self.length += n_new


def rope_inv_freq(config: Config) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with linear or llama3 context scaling."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim))
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq
    factor = float(scaling["factor"])
    if scaling["type"] == "linear":
        return inv_freq / factor
    # llama3: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def make_norm(config: Config) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
    return nn.RMSNorm(config.n_embd, eps=config.norm_eps)


class Attention(nn.Module):
    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        self.config, self.layer = config, layer
        self.qkv = nn.Linear(config.n_embd, config.qkv_size, bias=config.bias or config.qkv_bias)
        self.proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        c = self.config
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([c.n_head * c.head_dim, c.n_kv_head * c.head_dim,
                                     c.n_kv_head * c.head_dim], dim=-1)
        q = q.view(B, T, c.n_head, c.head_dim).transpose(1, 2)
        k = k.view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
        v = v.view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        # A full causal prefill with no cache offset uses SDPA's own causal path (fastest kernels).
        is_causal = mask is None and T > 1 and k.shape[2] == T
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=c.dropout if self.training else 0.0, enable_gqa=c.n_kv_head != c.n_head)
        return self.proj(y.transpose(1, 2).reshape(B, T, c.n_head * c.head_dim))


class MLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        up_size = config.intermediate_size * (2 if self.swiglu else 1)
        self.up = nn.Linear(config.n_embd, up_size, bias=config.bias)  # [gate; up] for SwiGLU
        self.down = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(h, approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        self.norm_1 = make_norm(config)
        self.attn = Attention(config, layer)
        self.norm_2 = make_norm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_1(x), rope, mask, cache))
        return x + self.dropout(self.mlp(self.norm_2(x)))


class Transformer(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd) if config.position == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = make_norm(config)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Kept out of the state dict and out of dtype casts: RoPE angles are always computed in fp32.
        self._inv_freq = rope_inv_freq(config) if config.position == "rope" else None

    @property
    def output_weight(self) -> torch.Tensor:
        return self.tok_emb.weight if self.config.tie_embeddings else self.lm_head.weight

    def init_weights(self, std: float = 0.02) -> None:
        """GPT-2 initialisation for training from scratch (residual projections scaled by depth)."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                torch.nn.init.zeros_(p) if name.endswith("bias") else torch.nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                torch.nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                torch.nn.init.normal_(p, 0.0, std)

    def _mask(self, q_pos: torch.Tensor, k_len: int, attn_mask: torch.Tensor | None,
              ragged: bool) -> torch.Tensor | None:
        """Boolean [B, 1, T, S] mask, or None when SDPA's causal flag (or no mask) is exact."""
        T = q_pos.shape[1]
        window = self.config.sliding_window
        needs_window = window is not None and k_len > window
        if attn_mask is None and not ragged and not needs_window and (T == 1 or k_len == T):
            return None
        k_pos = torch.arange(k_len, device=q_pos.device)
        allowed = k_pos[None, None, :] <= q_pos[:, :, None]
        if needs_window:
            allowed &= k_pos[None, None, :] > q_pos[:, :, None] - window
        allowed = allowed[:, None]
        if attn_mask is not None:  # [B, S] padding mask (True = real token) or a full [B, 1, T, S] mask
            allowed = allowed & (attn_mask[:, None, None, :].bool() if attn_mask.dim() == 2 else attn_mask.bool())
        return allowed

    def forward(self, idx: torch.Tensor, position_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None,
                return_hidden: bool = False, last_only: bool = False) -> torch.Tensor:
        """Logits [B, T, vocab] for token ids [B, T] (or hidden states with `return_hidden`).

        With a cache, the new tokens continue the cached sequence; `attn_mask` is a [B, S] padding
        mask over all S = cached + new positions, or a full boolean [B, 1, T, S] mask.
        """
        B, T = idx.shape
        ragged = False
        if cache is not None:
            cache_positions, k_len, ragged = cache.begin(B, T)
            position_ids = cache_positions if position_ids is None else position_ids
        else:
            k_len = T
            if position_ids is None:
                position_ids = torch.arange(T, device=idx.device).expand(B, T)
        if k_len > self.config.block_size:
            raise ContextLengthError(
                f"sequence of {k_len} tokens exceeds the context length of {self.config.block_size} tokens")
        x = self.tok_emb(idx)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        else:
            inv_freq = self._inv_freq.to(idx.device)
            angles = position_ids[..., None].float() * inv_freq
            angles = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, T, head_dim]
            rope = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x = self.drop(x)
        mask = self._mask(position_ids, k_len, attn_mask, ragged)
        for block in self.blocks:
            x = block(x, rope, mask, cache)
        if cache is not None:
            cache.end(T)
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        if return_hidden:
            return x
        # A tied model may still get its own (e.g. quantized) head module from the engine.
        return self.lm_head(x) if self.lm_head is not None else F.linear(x, self.tok_emb.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
