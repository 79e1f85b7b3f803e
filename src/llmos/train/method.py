"""A training method: which parameters learn and how a batch becomes a loss.

The loop knows nothing else about what it trains. Pretraining is `CausalLM` (all parameters,
next-token cross-entropy); a fine-tuning method subclasses it to freeze the base and add
adapters (`prepare`), to mask prompt tokens (`loss`), and to merge adapters back (`export`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # targets with this value add nothing to the loss (padding, prompt tokens)


def move(batch: Any, device: torch.device) -> Any:
    """`batch` (a tensor, or a tuple/list/dict of them) on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move(v, device) for v in batch)
    return batch


class CausalLM:
    """Next-token prediction on (inputs, targets) pairs, every parameter trained."""

    name = "causal-lm"

    def prepare(self, model: nn.Module) -> nn.Module:
        """Called once before the optimizer is built; returns the module to train."""
        return model

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=IGNORE_INDEX)

    def tokens(self, batch: Any) -> int:
        """Tokens that count towards throughput in `batch`."""
        return int(batch[0].numel())

    def export(self, model: nn.Module) -> nn.Module:
        """The plain Transformer to save as a model folder."""
        return model
