"""`llmos pretrain`: a model from scratch on prepared token shards, with the one training loop.

The run gets a folder (checkpoints, TensorBoard events, the final model) and a row in the run
store; the final model is a standard model folder with its lineage in llmos.json, and with
`--name` it is also saved into the library for `llmos generate`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint import config_to_hf, save_pretrained
from llmos.data import TokenData, prepare
from llmos.data.sources import find_files
from llmos.errors import ConfigError, NotFoundError
from llmos.fsutil import sha256_file
from llmos.library.store import ModelName, cache_dir
from llmos.model import Transformer
from llmos.train import checkpoints, dist
from llmos.train.batches import TokenBatches
from llmos.train.config import TrainConfig, from_dict
from llmos.train.loop import Trainer, TrainState
from llmos.train.report import Reporter
from llmos.train.runs import RunStore


@dataclass
class PretrainResult:
    run_id: str | None
    run_dir: Path
    state: TrainState
    model_dir: Path | None  # None when the run stopped before max_iters


def prepared_data(cfg: TrainConfig, info: dist.DistInfo) -> Path:
    """The prepared folder `data.path`, or `data.sources` prepared once into the cache (keyed by
    the files' digests and the settings, so a changed file is prepared afresh)."""
    d = cfg.data
    if d.path:
        return Path(d.path)
    if not d.sources:
        raise ConfigError("config field data.path is missing: give --data.path DIR (from `llmos data prepare`) "
                          "or --data.sources FILE...")
    files = find_files(d.sources)
    key = hashlib.sha256(json.dumps({"files": [[str(f.resolve()), sha256_file(f)] for f in files],
                                     "tokenizer": d.tokenizer, "val_fraction": d.val_fraction}).encode())
    folder = cache_dir() / "data" / key.hexdigest()[:20]
    if info.is_main and not (folder / "manifest.json").exists():
        prepare(d.sources, d.tokenizer, folder, val_fraction=d.val_fraction)
    dist.barrier(info)
    return folder


def code_version() -> str:
    """The llmos version, plus the git commit when running from a checkout."""
    from llmos import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+g{commit}" if commit else __version__


def find_resume(resume: str | bool, store: RunStore, name: str | None, out_dir: str | None) -> Path:
    """The run folder to resume: a path, a run id/name from the store, or (True) the latest run
    (of config `name` when given)."""
    if isinstance(resume, str) and Path(resume).is_dir():
        path = Path(resume)
        return path.parent.parent if (path / "trainer.pt").exists() else path
    if isinstance(resume, str):
        return store.get(resume).out_dir
    if out_dir:
        return Path(out_dir)
    if name:
        return store.get(name).out_dir
    runs = store.list()
    if not runs:
        raise NotFoundError("no runs to resume; see `llmos runs list`")
    return runs[-1].out_dir


def resume_config(run_dir: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config a run was started with (from its latest checkpoint), with `overrides` applied."""
    from llmos.train.config import apply_overrides

    ckpt = checkpoints.latest_checkpoint(run_dir)
    if ckpt is None:
        raise NotFoundError(f"{run_dir}: no checkpoint to resume from")
    saved = json.loads((ckpt / "trainer.json").read_text())["config"]
    return from_dict(apply_overrides(saved, overrides or {}), source=str(ckpt / "trainer.json"))


def pretrain(cfg: TrainConfig, *, resume: str | bool | None = None, out_dir: str | None = None,
             name: str | None = None, profile: int = 0, stop_at: int | None = None,
             store: RunStore | None = None) -> PretrainResult:
    """Train `cfg` (or continue the run `resume` names); see the module docstring."""
    target = ModelName.parse(name) if name else None  # a bad name fails now, not after training
    info = dist.init_distributed(cfg.system.device)
    store = (store or RunStore()) if info.is_main else None
    run_id = None
    try:
        data = TokenData(prepared_data(cfg, info))
        if len(data.val) == 0:
            raise ConfigError(f"{data.folder}: the validation split has zero tokens; prepare the data with "
                              "--val-fraction > 0")
        tokenizer = data.tokenizer()
        model_config = cfg.model_config(data.vocab_size)
        config_to_hf(model_config.replace(bias=True) if model_config.hf_model_type == "gpt2" else model_config)
        batches = TokenBatches(data, model_config.block_size, cfg.train.batch_size, cfg.train.seed,
                               info.rank, info.world_size)

        ckpt = None
        if resume:
            run_dir = find_resume(resume, store, cfg.name, out_dir) if info.is_main else None
            run_dir = Path(dist.gather(str(run_dir), info)[0])
            ckpt = checkpoints.latest_checkpoint(run_dir)
            if ckpt is None:
                raise NotFoundError(f"{run_dir}: no checkpoint to resume from")
            if info.is_main:
                run = store.find_by_dir(run_dir)
                run_id = run.id if run else store.create(cfg.name, "pretrain", cfg.to_dict(), run_dir).id
        else:
            if info.is_main:
                run = store.create(cfg.name, "pretrain", cfg.to_dict(), out_dir)
                run_id, run_dir = run.id, run.out_dir
            run_dir = Path(dist.gather(str(run_dir) if info.is_main else "", info)[0])
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoints.clean(run_dir / "checkpoints")

        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        model = Transformer(model_config)
        model.init_weights()
        torch.manual_seed(cfg.train.seed + info.rank)  # but each rank its own dropout stream

        lineage = {"source": "llmos pretrain", "run_id": run_id, "code_version": code_version(),
                   "data": {"digest": data.digest, "path": str(data.folder), "tokenizer": data.manifest["tokenizer"],
                            "sources": data.manifest["sources"], "tokens": data.manifest["splits"]["train"]["tokens"]},
                   "training_config": cfg.to_dict()}
        reporter = Reporter(store, run_id, run_dir / "tensorboard", enabled=info.is_main)
        trainer = Trainer(cfg, model, batches, tokenizer=tokenizer, run_dir=run_dir, reporter=reporter,
                          dist_info=info, lineage=lineage, profile_steps=profile)
        n_params = model.num_parameters()
        if ckpt is not None:
            trainer.resume(ckpt)
            if store is not None:
                store.truncate(run_id, trainer.state.step)
                store.update(run_id, status="running")
            reporter.message(f"resuming run {run_id} from {ckpt} (step {trainer.state.step})")
        else:
            reporter.message(f"run {run_id}: {n_params / 1e6:.2f}M parameters, {len(data.train):,} train tokens, "
                             f"device {trainer.device}, world size {info.world_size}; files in {run_dir}")
        state = trainer.fit(until=stop_at)

        model_dir = None
        if state.step >= cfg.train.max_iters:
            plain, _ = trainer._full_state()
            final = {**lineage, "val_loss": state.last_val_loss, "best_val_loss": state.best_val_loss,
                     "steps": state.step, "tokens_seen": state.tokens}
            if info.is_main:
                model_dir = save_pretrained(run_dir / "model", plain, tokenizer, lineage=final)
                if target is not None:
                    save_pretrained(target.path(), plain, tokenizer, lineage={**final, "name": str(target)})
                tok_s = state.tokens / state.train_time if state.train_time else 0.0
                store.update(run_id, status="finished", val_loss=state.last_val_loss,
                             best_val_loss=state.best_val_loss, steps=state.step, tokens=state.tokens,
                             train_time_s=state.train_time, tokens_per_s=tok_s, model_dir=str(model_dir),
                             name=str(target) if target else None)
                where = f"{target} ({target.path()})" if target else str(model_dir)
                reporter.message(f"done: {state.step} steps, val loss {state.last_val_loss}, "
                                 f"{tok_s:,.0f} tok/s; model saved to {where}")
        elif store is not None:
            store.update(run_id, status="stopped", steps=state.step)
        reporter.close()
        return PretrainResult(run_id, run_dir, state, model_dir)
    except BaseException as e:
        if store is not None and run_id is not None:
            store.update(run_id, status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                         error=str(e)[:500])
        raise
    finally:
        dist.shutdown(info)
