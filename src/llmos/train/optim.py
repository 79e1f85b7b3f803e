"""AdamW with nanoGPT's parameter groups, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from llmos.train.config import TrainSection


def build_optimizer(named_params: Sequence[tuple[str, nn.Parameter]], cfg: TrainSection,
                    impl: str = "auto") -> torch.optim.AdamW:
    """AdamW where matrices and embeddings decay and biases and norm gains do not (as in GPT-2).

    `impl` auto picks the fused kernel (one kernel for all parameters; on CPU too since torch 2.4),
    falling back to foreach; tied weights appear once because named_parameters deduplicates them.
    """
    decay = [p for _, p in named_params if p.dim() >= 2]
    no_decay = [p for _, p in named_params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    if impl in ("auto", "fused"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            if impl == "fused":
                raise
    return torch.optim.AdamW(groups, foreach=impl != "for-loop", **kwargs)


def lr_at(step: int, cfg: TrainSection, decay_iters: int) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at decay_iters (nanoGPT's get_lr)."""
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step > decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)
