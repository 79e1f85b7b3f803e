"""Training checkpoints: atomic folders, a `latest` pointer, keep-last-N and best-by-val-loss.

    run_dir/checkpoints/
      step-0000250/     a standard model folder (loads with `llmos generate`) plus
                        trainer.pt (optimizer, RNG states; read back with weights_only=True)
                        trainer.json (step, losses, config: the human-readable part)
      latest.json       {"step": 250, "dir": "step-0000250"}, replaced atomically
      best.json         the checkpoint with the lowest val loss

A folder appears in one rename once complete, and the pointers move only after that, so a kill
at any moment leaves `latest` naming a whole checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint import load_pretrained, save_pretrained
from llmos.errors import ModelFormatError, NotFoundError
from llmos.fsutil import atomic_dir, cleanup_partials, write_json_atomic

LATEST, BEST = "latest.json", "best.json"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, tokenizer: Any, trainer: dict[str, Any],
                    info: dict[str, Any], lineage: dict[str, Any], keep_last: int, is_best: bool) -> Path:
    """Write `root/step-N` (model folder + trainer state), then move the pointers, then prune."""
    name = f"step-{step:07d}"
    dest = root / name
    with atomic_dir(dest) as tmp:
        save_pretrained(tmp / "model", model, tokenizer, lineage=lineage)
        for f in (tmp / "model").iterdir():  # the checkpoint folder itself is the model folder
            f.rename(tmp / f.name)
        (tmp / "model").rmdir()
        torch.save(trainer, tmp / "trainer.pt")
        write_json_atomic(tmp / "trainer.json", {"step": step, **info})
    pointer = {"step": step, "dir": name, **{k: info[k] for k in ("val_loss",) if k in info}}
    write_json_atomic(root / LATEST, pointer)
    if is_best:
        write_json_atomic(root / BEST, pointer)
    prune(root, keep_last)
    return dest


def _pointed(root: Path, pointer: str) -> str | None:
    try:
        return json.loads((root / pointer).read_text())["dir"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints, never the ones `latest` or `best` name."""
    steps = sorted(p.name for p in root.glob("step-*") if p.is_dir())
    keep = set(steps[-keep_last:]) if keep_last > 0 else set()
    keep |= {_pointed(root, LATEST), _pointed(root, BEST)}
    for name in steps:
        if name not in keep:
            # Renamed first so a kill mid-delete never leaves a half folder that looks like a checkpoint.
            doomed = root / f".{name}.partial-deleting"
            os.rename(root / name, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = run_dir / "checkpoints"
    name = _pointed(root, LATEST)
    if name is None:
        return None
    path = root / name
    if not (path / "trainer.pt").is_file():
        raise ModelFormatError(f"{root / LATEST} names {path}, which is not a complete checkpoint")
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state dict, trainer state, trainer.json) of a checkpoint folder; nothing is unpickled
    beyond tensors and plain containers (`weights_only=True`)."""
    if not (path / "trainer.pt").is_file():
        raise NotFoundError(f"{path}: not a training checkpoint (no trainer.pt)")
    model = load_pretrained(path, with_tokenizer=False).model
    trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    info = json.loads((path / "trainer.json").read_text())
    return model.state_dict(), trainer, info


def clean(root: Path) -> None:
    """Remove leftovers of checkpoints a killed process was writing or deleting."""
    if root.is_dir():
        cleanup_partials(root)
