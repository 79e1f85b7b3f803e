"""Model FLOPs and the hardware peak they are measured against (MFU)."""

from __future__ import annotations

import torch

from llmos.model import Config

# Dense bf16 tensor-core peaks (FLOP/s) of GPUs people train on, by a substring of the device name.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12,
                 "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}


def flops_per_token(config: Config, n_params: int) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) plus attention's score and value
    products, 12 * layers * width * context (the PaLM appendix B estimate nanoGPT uses)."""
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_head * config.head_dim * config.block_size


def peak_flops(device: torch.device, configured: float | None = None) -> float | None:
    """The FLOP/s to divide by for MFU: configured, or a known GPU's bf16 peak. A CPU has no peak
    worth quoting (it depends on threads, vector units and the neighbours' load), so there the
    progress line shows achieved GFLOP/s unless `system.peak_flops` is set."""
    if configured:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
    return None
