"""Where a run's numbers go: a live line on stderr, the run store, and TensorBoard event files.

Only the main process reports; the other ranks get a `Reporter` that does nothing.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from llmos.train.runs import RunStore


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Reporter:
    def __init__(self, store: RunStore | None = None, run_id: str | None = None, tb_dir: Path | None = None,
                 enabled: bool = True, stream: TextIO | None = None) -> None:
        self.store, self.run_id, self.enabled = store, run_id, enabled
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self._line_open = False
        self.tb: Any = None
        if enabled and tb_dir is not None:
            try:  # TensorBoard is optional: torch's writer needs the tensorboard package
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tb_dir))
            except ImportError:
                self.tb = None

    def progress(self, step: int, total: int, loss: float, lr: float, tokens_per_s: float, eta_s: float,
                 mfu: float | None = None, flops: float | None = None) -> None:
        """The live line: rewritten in place on a terminal, one line per log interval otherwise."""
        if not self.enabled:
            return
        line = (f"step {step}/{total} | loss {loss:.4f} | lr {lr:.2e} | {tokens_per_s:,.0f} tok/s"
                + (f" | MFU {100 * mfu:.1f}%" if mfu is not None else "")
                + (f" | {flops / 1e9:.1f} GFLOP/s" if mfu is None and flops else "") + f" | ETA {_duration(eta_s)}")
        if self.live:
            width = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r" + line[:width - 1] + "\x1b[K")
            self._line_open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(text.rstrip("\n") + "\n")
        self.stream.flush()

    def scalars(self, rows: list[tuple[str, int, float]]) -> None:
        if not self.enabled or not rows:
            return
        if self.store is not None and self.run_id is not None:
            self.store.log(self.run_id, rows)
        if self.tb is not None:
            for key, step, value in rows:
                self.tb.add_scalar(key, value, step, walltime=time.time())

    def text(self, key: str, step: int, value: str) -> None:
        if self.enabled and self.tb is not None:
            self.tb.add_text(key, value, step)

    def close(self) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        if self.tb is not None:
            self.tb.close()
