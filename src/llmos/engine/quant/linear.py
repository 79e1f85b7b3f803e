"""`QuantLinear`: a linear layer with int8 or int4 weights in blocks of 32 inputs.

One layout covers the GGUF formats we load without re-quantizing, and our own quantizers:
  q8 (int8):  w = d * q, q int8, one fp16 scale d per 32 inputs (GGUF Q8_0);
  q4 (int4):  w = d * q + m, q in 0..15, fp16 d and m per 32 inputs (GGUF Q4_1; Q4_0 is the
              special case m = -8 d, which is exact in fp16).
The int8 scales are per 32-block rather than per output channel: the kernel quantizes the
activations per 32-block anyway, so a per-block weight scale costs nothing extra, is more
accurate, and lets Q8_0 files load as they are.

Up to KERNEL_MAX_ROWS activation rows (decode, batches, prompt chunks) run the C++ kernel,
which rounds the activations to int8 per 32-block; more rows (long prefill) dequantize the
matrix to fp32 and use BLAS.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gguf.constants import GGMLQuantizationType
from torch import nn

from llmos.engine.quant import kernels
from llmos.engine.quant.kernels import QK

MODES = {"int8": "q8", "int4": "q4"}
# GGUF block types loaded as they are: our format and the bytes per 32-weight block.
GGUF_LAYOUTS = {"Q8_0": ("q8", 34), "Q4_0": ("q4", 18), "Q4_1": ("q4", 20)}
# Up to this many activation rows the int8 kernel runs; above, dequantize + sgemm (exact fp32
# activations). The kernel is ~2x faster up to 128 rows and about even at 512 on 2 cores
# (benchmarks/NOTES.md), so long prompts and perplexity runs get the exact path at no real cost.
KERNEL_MAX_ROWS = 128
# The fp32 loop only wins while the product is bandwidth-bound; beyond, BLAS's blocking does.
DENSE_MAX_ROWS = 16


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).contiguous().view(torch.int16)


def _type_name(ggml_type: GGMLQuantizationType | int | str) -> str:
    if isinstance(ggml_type, str):
        return ggml_type.upper()
    return GGMLQuantizationType(int(ggml_type)).name


class QuantLinear(nn.Module):
    """y = x @ W.T + b with W stored as q8 or q4 blocks (see the module docstring)."""

    def __init__(self, fmt: str, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if fmt not in ("q4", "q8"):
            raise ValueError(f"unknown quantized format {fmt!r} (expected q4 or q8)")
        self.fmt = fmt
        self.out_features, nb = d.shape
        self.in_features = nb * QK
        self.register_buffer("qs", qs.contiguous())
        # fp16 scales kept as their int16 bits: a model-wide cast (model.to(torch.bfloat16)) skips
        # integer buffers, so it cannot round them; `scales()` gives the fp16 view.
        self.register_buffer("d", _bits(d))
        self.register_buffer("m", _bits(m) if m is not None else None)
        self.register_buffer("bias", bias.detach().float().contiguous() if bias is not None else None)
        # Resolved once: a decode step's ~120 calls cost as much in Python and dispatch as in math.
        self._kernel = torch.ops.llmos_quant.linear.default if kernels.load() else None

    # --- constructors -------------------------------------------------------------------------

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, mode: str = "int8") -> QuantLinear:
        """Quantize an fp32/bf16 [N, K] weight (K a multiple of 32): int8 symmetric or int4
        min/scale (the Q4_1 recipe), per block of 32 inputs."""
        fmt = MODES.get(mode)
        if fmt is None:
            raise ValueError(f"unknown quantization mode {mode!r} (expected int8 or int4)")
        N, K = weight.shape
        if K % QK:
            raise ValueError(f"in_features={K} is not a multiple of {QK}")
        w = weight.detach().float().reshape(N, K // QK, QK)
        if fmt == "q8":
            d = (w.abs().amax(-1) / 127).half()
            # Round with the fp16 scale the kernel will use, not the fp32 one it came from.
            inv = torch.where(d > 0, 1.0 / d.float(), 0.0)
            q = torch.round(w * inv[..., None]).clamp_(-127, 127).to(torch.int8)
            return cls("q8", q.view(N, K), d, None, bias)
        lo, hi = w.amin(-1), w.amax(-1)
        d, m = ((hi - lo) / 15).half(), lo.half()
        inv = torch.where(d > 0, 1.0 / d.float(), 0.0)
        q = torch.round((w - m.float()[..., None]) * inv[..., None]).clamp_(0, 15).to(torch.uint8)
        packed = q[..., : QK // 2] | (q[..., QK // 2:] << 4)  # GGUF's nibble order
        return cls("q4", packed.reshape(N, K // 2), d, m, bias)

    @classmethod
    def from_gguf_blocks(cls, raw: np.ndarray | torch.Tensor, ggml_type: GGMLQuantizationType | int | str,
                         shape: tuple[int, int], bias: torch.Tensor | None = None) -> QuantLinear:
        """A layer straight from GGUF block bytes (e.g. `gguf.GGUFReader(path).tensors[i].data`)
        of type Q8_0, Q4_0 or Q4_1, with `shape` = (out_features, in_features). No re-quantization:
        the quants and fp16 scales are only split into our arrays."""
        name = _type_name(ggml_type)
        if name not in GGUF_LAYOUTS:
            raise ValueError(f"GGUF type {name} has no quantized layout here (supported: {', '.join(GGUF_LAYOUTS)})")
        size = GGUF_LAYOUTS[name][1]
        N, K = shape
        if K % QK:
            raise ValueError(f"in_features={K} is not a multiple of {QK}")
        if isinstance(raw, np.ndarray):
            raw = torch.from_numpy(np.array(raw, dtype=np.uint8, copy=True))  # readers hand out read-only maps
        if raw.dtype != torch.uint8 or raw.numel() != N * K // QK * size:
            raise ValueError(f"{name} data of {raw.numel()} bytes does not hold a {N}x{K} matrix")
        blocks = raw.reshape(N, K // QK, size)

        def f16(at: int) -> torch.Tensor:
            return blocks[..., at:at + 2].contiguous().view(torch.float16)[..., 0]

        if name == "Q8_0":
            return cls("q8", blocks[..., 2:].contiguous().view(torch.int8).reshape(N, K), f16(0), None, bias)
        if name == "Q4_1":
            return cls("q4", blocks[..., 4:].reshape(N, K // 2), f16(0), f16(2), bias)
        d = f16(0)
        m = d.float() * -8  # Q4_0: d * (q - 8) = d * q + (-8 d), exact in fp32 and fp16
        if not torch.isfinite(m.half()).all():
            raise ValueError("Q4_0 scale too large for an fp16 offset")
        return cls("q4", blocks[..., 2:].reshape(N, K // 2), d, m.half(), bias)

    # --- compute ------------------------------------------------------------------------------

    def scales(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The per-block fp16 scales d and offsets m (None for q8)."""
        return self.d.view(torch.float16), None if self.m is None else self.m.view(torch.float16)

    def dequantize(self) -> torch.Tensor:
        """The fp32 [out_features, in_features] weight these blocks stand for."""
        return kernels.dequantize(self.fmt, self.qs, self.d, self.m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is not None and x.is_cpu:
            # The op picks kernel or dequantize + sgemm by row count itself (KERNEL_MAX_ROWS).
            b = self._buffers  # one dict instead of four nn.Module.__getattr__ calls
            return self._kernel(x, b["qs"], b["d"], b["m"], b["bias"], KERNEL_MAX_ROWS)
        bias = self.bias.float() if self.bias is not None else None
        y = F.linear(x.float(), kernels.dequantize(self.fmt, self.qs, self.d, self.m).to(x.device), bias)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        kind = "int4 (d, m per 32)" if self.fmt == "q4" else "int8 (d per 32)"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}, bias={self.bias is not None}"


class DenseLinear(nn.Module):
    """An fp32 linear layer whose few-row products (decode) run our matrix-vector loop, which
    streams the weights ~2x faster than torch's here; many rows, autograd and non-fp32 weights
    go to F.linear. Shares (does not copy) the weight and bias it is built from, under the same
    parameter names as nn.Linear."""

    def __init__(self, weight: nn.Parameter | torch.Tensor, bias: nn.Parameter | torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
        self.bias = bias if bias is None or isinstance(bias, nn.Parameter) else nn.Parameter(bias, requires_grad=False)
        self._kernel = torch.ops.llmos_quant.dense.default if kernels.load() else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is not None and x.is_cpu and not torch.is_grad_enabled():
            return self._kernel(x, self.weight, self.bias, DENSE_MAX_ROWS)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
