"""The one on-disk model format: a Hugging Face-compatible folder plus our `llmos.json`.

    config.json  model.safetensors (or shards + index)  tokenizer.json  tokenizer_config.json
    generation_config.json  llmos.json (lineage: source, base model, data, code version)

Training checkpoints, imports and exports all read and write this folder, and `transformers`
loads it unchanged. Weights are only ever read from safetensors: pickle files are refused.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from llmos.checkpoint.hf_format import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from llmos.errors import ModelFormatError, NotFoundError
from llmos.fsutil import atomic_dir, write_json_atomic
from llmos.model import Config, Transformer
from llmos.tokenizer import Tokenizer

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SHARD_BYTES = 2 << 30  # shard model.safetensors above 2 GiB, as Hugging Face does by default
LINEAGE_FILE = "llmos.json"


def code_version() -> str:
    from llmos import __version__

    return __version__


@dataclass
class Pretrained:
    """A loaded model folder: the model, its tokenizer and the files' metadata."""

    model: Transformer
    tokenizer: Tokenizer | None
    generation_config: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self) -> Config:
        return self.model.config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return value


def read_config(folder: str | os.PathLike) -> Config:
    path = Path(folder) / "config.json"
    return config_from_hf(_read_json(path), source=str(path))


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(_read_json(index).get("weight_map", {}).values()))
        if not names:
            raise ModelFormatError(f"{index}: empty weight_map")
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ModelFormatError(
            f"{folder}: only pickle weights ({', '.join(pickles)}); llmos never unpickles model files. "
            "Convert them to safetensors first.")
    raise ModelFormatError(f"{folder}: no model.safetensors found")


def read_safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        if not path.exists():
            raise ModelFormatError(f"{path}: weight file listed in the index is missing")
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    tensors[name] = f.get_tensor(name)
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelFormatError(f"{path}: unreadable safetensors file ({e})") from None
    return tensors


def build_model(config: Config, state: dict[str, torch.Tensor], dtype: torch.dtype | None = torch.float32,
                source: str = "model") -> Transformer:
    """A Transformer holding exactly `state` (no random init: built on the meta device).
    `dtype=None` keeps the tensors' own dtype."""
    with torch.device("meta"):
        model = Transformer(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelFormatError(f"{source}: missing tensors {missing[:5]} / unexpected tensors {unexpected[:5]}")
    for name, param in model.state_dict().items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise ModelFormatError(
                f"{source}: tensor {name} has shape {tuple(state[name].shape)}, config expects {tuple(param.shape)}")
    model.load_state_dict({k: v.to(dtype) if dtype else v for k, v in state.items()}, assign=True)
    return model.eval()


def load_pretrained(folder: str | os.PathLike, dtype: torch.dtype | None = torch.float32,
                    with_tokenizer: bool = True) -> Pretrained:
    """Load a model folder (ours or a Hugging Face one) without unpickling anything."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFoundError(f"{folder}: model folder not found")
    config = read_config(folder)
    files = _weight_files(folder)
    state = state_dict_from_hf(read_safetensors(files), config, source=str(files[0]))
    model = build_model(config, state, dtype, source=str(folder))
    tokenizer = Tokenizer.from_folder(folder) if with_tokenizer and (folder / "tokenizer.json").exists() else None
    gen = folder / "generation_config.json"
    lineage = folder / LINEAGE_FILE
    return Pretrained(model=model, tokenizer=tokenizer,
                      generation_config=_read_json(gen) if gen.exists() else {},
                      lineage=_read_json(lineage) if lineage.exists() else {}, path=folder)


def _save_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    write_json_atomic(folder / "model.safetensors.index.json",
                      {"metadata": {"total_size": total}, "weight_map": weight_map})


def save_pretrained(dest: str | os.PathLike, model: Transformer, tokenizer: Tokenizer | None,
                    generation_config: dict[str, Any] | None = None,
                    lineage: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write a complete model folder atomically (a temp folder renamed into place at the end)."""
    dest = Path(dest)
    config = model.config
    state = {k: (v.detach().to(dtype) if dtype else v.detach()).cpu() for k, v in model.state_dict().items()}
    with atomic_dir(dest) as tmp:
        hf_config = config_to_hf(config)
        if dtype is not None:
            hf_config["torch_dtype"] = str(dtype).removeprefix("torch.")
        if tokenizer is not None:
            tokenizer.save(tmp)
            for key, tid in (("bos_token_id", tokenizer.bos_id), ("eos_token_id", tokenizer.eos_id),
                             ("pad_token_id", tokenizer.pad_id)):
                if tid is not None:
                    hf_config.setdefault(key, tid)
        write_json_atomic(tmp / "config.json", hf_config)
        _save_weights(tmp, state_dict_to_hf(state, config))
        gen = {"_from_model_config": False, **(generation_config or {})}
        write_json_atomic(tmp / "generation_config.json", gen)
        info = {"format": "llmos-model", "format_version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                time.gmtime()), "llmos_version": code_version(), "parameters": model.num_parameters(),
                **(lineage or {})}
        write_json_atomic(tmp / LINEAGE_FILE, info)
    return dest
