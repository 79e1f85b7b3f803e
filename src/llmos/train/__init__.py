"""Training: one loop (pretraining and every fine-tuning method), configs, checkpoints, runs."""

from typing import Any

from llmos.train.cli import add_commands

__all__ = ["CausalLM", "PretrainResult", "RunStore", "TrainConfig", "TrainState", "Trainer", "add_commands",
           "load_config", "pretrain"]

_LAZY = {"CausalLM": "method", "PretrainResult": "pretraining", "RunStore": "runs", "TrainConfig": "config",
         "TrainState": "loop", "Trainer": "loop", "load_config": "config", "pretrain": "pretraining"}


def __getattr__(name: str) -> Any:
    # Lazy so that building the CLI parser (add_commands) does not import torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"llmos.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'llmos.train' has no attribute {name!r}")
