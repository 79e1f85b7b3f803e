"""The engine's KV cache: one row per running sequence, each row with its own length.

Running sequences always occupy rows 0..B-1, so a decode step attends over a plain view of the
cache (no gather); when a sequence retires, the last row is moved into its place. Capacity
grows by doubling (every row shares it), so memory follows the longest live sequence rather
than the model's full context.
"""

from __future__ import annotations

import torch

from llmos.model import Config, ContextLengthError


class BatchKVCache:
    def __init__(self, config: Config, max_rows: int, max_len: int, dtype: torch.dtype = torch.float32,
                 initial_len: int = 256) -> None:
        self.config, self.max_rows, self.max_len, self.dtype = config, max_rows, max_len, dtype
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.lengths = [0] * max_rows
        self._grow(min(initial_len, max_len))
        self._rows = slice(0, 0)
        self._positions = torch.zeros(0, 1, dtype=torch.long)

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        if needed > self.max_len:
            raise ContextLengthError(f"sequence of {needed} tokens exceeds the context length of {self.max_len}")
        new_cap = min(self.max_len, max(needed, 2 * self.capacity))
        shape = (self.max_rows, self.config.n_kv_head, new_cap, self.config.head_dim)
        for store in (self.k, self.v):
            for i in range(self.config.n_layer):
                fresh = torch.zeros(shape, dtype=self.dtype)
                if store and i < len(store):
                    fresh[:, :, :self.capacity] = store[i]
                    store[i] = fresh
                else:
                    store.append(fresh)
        self.capacity = new_cap

    def reset_row(self, row: int) -> None:
        self.lengths[row] = 0

    def move_row(self, src: int, dst: int) -> None:
        """Copy row `src` (its live prefix) into row `dst`, to keep running rows contiguous."""
        n = self.lengths[src]
        for store in (self.k, self.v):
            for layer in store:
                layer[dst, :, :n] = layer[src, :, :n]
        self.lengths[dst], self.lengths[src] = n, 0

    # -- the model's cache protocol --------------------------------------------------------------
    def bind_prefill(self, row: int, n_new: int) -> None:
        """The next forward pass appends `n_new` tokens to row `row` alone."""
        self._grow(self.lengths[row] + n_new)
        self._rows = slice(row, row + 1)
        start = self.lengths[row]
        self._positions = torch.arange(start, start + n_new)[None]
        self._ragged = False

    def bind_decode(self, n_rows: int) -> None:
        """The next forward pass appends one token to each of rows 0..n_rows-1."""
        self._grow(max(self.lengths[:n_rows]) + 1)
        self._rows = slice(0, n_rows)
        self._positions = torch.tensor(self.lengths[:n_rows])[:, None]
        self._ragged = len(set(self.lengths[:n_rows])) > 1

    def begin(self, batch: int, n_new: int) -> tuple[torch.Tensor, int, bool]:
        return self._positions, int(self._positions.max()) + 1, self._ragged

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kc, vc = self.k[layer], self.v[layer]
        rows, pos = self._rows, self._positions
        if pos.shape[1] == 1 and rows.stop - rows.start > 1:
            index = torch.arange(rows.start, rows.stop)
            kc[index, :, pos[:, 0]] = k[:, :, 0]
            vc[index, :, pos[:, 0]] = v[:, :, 0]
        else:
            start = int(pos[0, 0])
            kc[rows, :, start:start + k.shape[2]] = k
            vc[rows, :, start:start + k.shape[2]] = v
        end = int(pos.max()) + 1
        return kc[rows, :, :end], vc[rows, :, :end]

    def end(self, n_new: int) -> None:
        for row in range(self._rows.start, self._rows.stop):
            self.lengths[row] += n_new
