"""Distributed training under torchrun: process group set-up, DDP/FSDP wrapping, reductions.

Without torchrun's environment (RANK, WORLD_SIZE) everything here is a no-op, so the same
command runs on one process or many.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llmos.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); returns rank info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=10))
    return info


def pick_device(pref: str, info: DistInfo) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"config field system.device is {pref!r} but no CUDA device is available")
        return torch.device("cuda", info.local_rank) if pref == "cuda" else torch.device(pref)
    if pref != "cpu":
        raise ConfigError(f"config field system.device must be auto, cpu, cuda or cuda:N, got {pref!r}")
    return torch.device("cpu")


def wrap(model: nn.Module, info: DistInfo, strategy: str, device: torch.device) -> nn.Module:
    """DDP (gradients averaged after backward) or FSDP2 (parameters sharded per block; CUDA only)."""
    if not info.enabled:
        return model
    if strategy == "fsdp":
        if device.type != "cuda":
            raise ConfigError("system.distributed fsdp needs CUDA; use ddp on CPU")
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model, "blocks", []):
            fully_shard(block)
        fully_shard(model)
        return model
    if strategy != "ddp":
        raise ConfigError(f"config field system.distributed must be ddp or fsdp, got {strategy!r}")
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip the gradient all-reduce on all but the last micro-step of an accumulation."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    if skip and hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(True)
    return contextlib.nullcontext()


def mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """`t` averaged over ranks (in place)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
