"""Turn llama.cpp's quantized tensor blocks into float32 torch tensors.

Each kernel takes the raw bytes of one tensor (a 1-D uint8 tensor, rows already contiguous, as
GGUF stores them) and returns a flat float32 tensor; the caller reshapes it. The kernels work on
all blocks of a tensor at once with torch ops: `gguf.quants.dequantize` does the same in numpy
but takes ~1 s for a 135M model on two cores, several times slower than these.

Block layouts follow ggml-common.h; the field order inside each block is noted per kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Elements per block and bytes per block, per ggml type name (as in gguf.GGML_QUANT_SIZES).
BLOCK_SIZES: dict[str, tuple[int, int]] = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2),
    "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20),
    "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}
SUPPORTED_TYPES = tuple(BLOCK_SIZES)


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 scalar at byte `start` of every block, as an [n_blocks, 1] float32 column."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[..., n] bytes → [..., 2, n]: low nibbles first, then high ones, the order ggml packs
    a 32-value group in (value j in the low nibble of byte j, value j+n in its high nibble)."""
    return torch.stack((packed & 0x0F, packed >> 4), dim=-2)


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    # d: f16, then 32 int8 quants.
    q = blocks[:, 2:].contiguous().view(torch.int8).float()
    return q.mul_(_f16(blocks, 0))


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    # d: f16, 16 bytes of nibbles; values are centred on 8.
    q = _nibbles(blocks[:, 2:]).reshape(-1, 32).float().sub_(8.0)
    return q.mul_(_f16(blocks, 0))


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    # d: f16, m: f16 (the block minimum), 16 bytes of nibbles: x = d*q + m.
    q = _nibbles(blocks[:, 4:]).reshape(-1, 32).float()
    return torch.addcmul(_f16(blocks, 2), q, _f16(blocks, 0))


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack the 12-byte field of Q4_K/Q5_K into 8 six-bit scales and 8 six-bit mins.

    Bytes 0-3 hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; scales/mins 4-7 keep
    their low 4 bits in the nibbles of bytes 8-11 and their top 2 bits in the spare top bits
    of bytes 0-3 / 4-7."""
    a, b, c = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat((a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)), dim=1)
    mins = torch.cat((b & 0x3F, (c >> 4) | ((b >> 6) << 4)), dim=1)
    return scales.float(), mins.float()


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    # d: f16, dmin: f16, 12 bytes of scales/mins, 128 bytes of nibbles for 8 sub-blocks of 32.
    # Each 32-byte chunk j carries sub-block 2j in its low nibbles and 2j+1 in its high ones.
    n = blocks.shape[0]
    scales, mins = _k_scales(blocks[:, 4:16])
    q = _nibbles(blocks[:, 16:].reshape(n, 4, 32)).reshape(n, 8, 32).float()
    d = (_f16(blocks, 0) * scales).unsqueeze(-1)
    m = (_f16(blocks, 2) * mins).unsqueeze(-1)
    return q.mul_(d).sub_(m).reshape(n, 256)


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    # As Q4_K plus 32 bytes of fifth bits before the nibbles: bit k of byte l is the high bit
    # of element l in sub-block k.
    n = blocks.shape[0]
    scales, mins = _k_scales(blocks[:, 4:16])
    low = _nibbles(blocks[:, 48:].reshape(n, 4, 32)).reshape(n, 8, 32)
    shifts = torch.arange(8, dtype=torch.uint8).view(1, 8, 1)
    high = (blocks[:, 16:48].unsqueeze(1) >> shifts) & 1
    q = (low | (high << 4)).float()
    d = (_f16(blocks, 0) * scales).unsqueeze(-1)
    m = (_f16(blocks, 2) * mins).unsqueeze(-1)
    return q.mul_(d).sub_(m).reshape(n, 256)


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    # 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one per 16
    # values), d: f16. Each half of 128 values uses 64 low bytes (a = first 32, b = next 32) and
    # 32 high bytes; its four groups of 32 are (lo a, lo b, hi a, hi b), with the high 2 bits
    # of group g in bits 2g..2g+1 of the high byte.
    n = blocks.shape[0]
    low = _nibbles(blocks[:, :128].reshape(n, 2, 64)).reshape(n, 2, 4, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
    high = (blocks[:, 128:192].reshape(n, 2, 1, 32) >> shifts) & 3
    q = (low | (high << 4)).view(n, 16, 16).to(torch.int8).float().sub_(32.0)
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float()
    d = (_f16(blocks, 208) * scales).unsqueeze(-1)
    return q.mul_(d).reshape(n, 256)


_BLOCK_KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}
# Quantized kernels build a few temporaries per element; splitting big tensors keeps them in
# cache-sized pieces and bounds peak memory at a few times the output size.
_CHUNK_BLOCKS = 1 << 14


def dequantize(raw: torch.Tensor, type_name: str, n_elements: int) -> torch.Tensor:
    """Flat float32 values of a tensor whose GGUF bytes are `raw` (1-D uint8, exactly the
    tensor's bytes). Unsupported types raise ValueError; callers name the file and tensor."""
    if type_name not in BLOCK_SIZES:
        raise ValueError(f"ggml type {type_name} is not supported (supported: {', '.join(SUPPORTED_TYPES)})")
    block, nbytes = BLOCK_SIZES[type_name]
    if n_elements % block or raw.numel() != n_elements // block * nbytes:
        raise ValueError(f"{raw.numel()} bytes do not hold {n_elements} {type_name} values")
    if type_name == "F32":
        return raw.view(torch.float32)
    if type_name == "F16":
        return raw.view(torch.float16).float()
    if type_name == "BF16":
        return raw.view(torch.bfloat16).float()
    blocks = raw.view(-1, nbytes)
    kernel = _BLOCK_KERNELS[type_name]
    if blocks.shape[0] <= _CHUNK_BLOCKS:
        return kernel(blocks).reshape(-1)
    out = torch.empty(blocks.shape[0], block, dtype=torch.float32)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        end = min(start + _CHUNK_BLOCKS, blocks.shape[0])
        out[start:end] = kernel(blocks[start:end])
    return out.view(-1)
