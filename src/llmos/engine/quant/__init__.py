"""Low-bit weights: int8/int4 linear layers, GGUF block loading and the fast CPU kernels
(plus the same matrix-vector speed-up for fp32 weights)."""

from llmos.engine.quant.kernels import load as load_kernels
from llmos.engine.quant.linear import DenseLinear, QuantLinear
from llmos.engine.quant.model import GGUFBlocks, quantize_model, read_gguf_blocks

__all__ = ["DenseLinear", "GGUFBlocks", "QuantLinear", "load_kernels", "quantize_model", "read_gguf_blocks"]
