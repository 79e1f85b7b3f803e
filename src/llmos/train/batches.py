"""Batches of token windows drawn from prepared shards.

Every draw is a pure function of (seed, step, micro-step): nothing to save for an exact resume
but the step, and under DDP each rank takes its own rows of one global batch, so N processes
see exactly the data one process with N times the batch would see.
"""

from __future__ import annotations

import numpy as np
import torch

from llmos.data import TokenData, TokenSplit
from llmos.errors import ConfigError

TRAIN_STREAM, EVAL_STREAM = 0, 1


class RandomWindows:
    """nanoGPT's sampling: each row is a random window of block_size + 1 tokens of the split."""

    def __init__(self, split: TokenSplit, block_size: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, name: str = "train") -> None:
        if len(split) < block_size + 1:
            raise ConfigError(f"the {name} split has {len(split)} tokens, fewer than block_size + 1 = "
                              f"{block_size + 1}; use more data, a larger val fraction or a smaller block_size")
        self.split, self.block_size, self.batch_size = split, block_size, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def draw(self, stream: int, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, stream, step, micro])
        # nanoGPT: torch.randint(len(data) - block_size, ...), i.e. every full window can be drawn
        offsets = rng.integers(0, len(self.split) - self.block_size, size=self.batch_size * self.world_size)
        mine = offsets[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        rows = torch.from_numpy(self.split.windows(mine, self.block_size + 1))
        return rows[:, :-1], rows[:, 1:]



class TokenBatches:
    """Training batches from the train split, evaluation batches from the held-out val split."""

    def __init__(self, data: TokenData, block_size: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.train = RandomWindows(data.train, block_size, batch_size, seed, rank, world_size, "train")
        self.val = RandomWindows(data.val, block_size, batch_size, seed, rank, world_size, "val")

    def train_batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train.draw(TRAIN_STREAM, step, micro)

    def eval_batches(self, iters: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The same `iters` batches every time, so successive evaluations are comparable."""
        return [self.val.draw(EVAL_STREAM, 0, i) for i in range(iters)]
