"""The training config: plain values in a few sections, read from YAML, overridable from the CLI.

    model:      a preset name and/or model Config fields (vocab_size comes from the data)
    data:       a prepared folder (`path`) or raw `sources` prepared on the fly with `tokenizer`
    train:      batch, optimizer, schedule, clipping
    eval:       how often and how much to evaluate, and the text samples shown
    checkpoint: how often, how many to keep
    system:     device, precision, compile, threads, distributed strategy

Every key is checked: an unknown or mistyped key is an error naming it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llmos.errors import ConfigError, NotFoundError
from llmos.model import Config as ModelConfig


@dataclass
class DataConfig:
    path: str | None = None  # a folder from `llmos data prepare`
    sources: list[str] = field(default_factory=list)  # or raw files/folders, prepared into the cache
    tokenizer: str = "char"  # for `sources`: char | bpe:VOCAB | PATH | model:NAME
    val_fraction: float = 0.1


@dataclass
class TrainSection:
    batch_size: int = 12  # sequences per micro-batch per process
    gradient_accumulation_steps: int = 1
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 1337
    log_interval: int = 10


@dataclass
class EvalSection:
    interval: int = 250  # 0 disables periodic evaluation (the final one still runs)
    iters: int = 20  # val batches per evaluation (always the same batches, so curves are comparable)
    at_start: bool = True
    sample_tokens: int = 200  # text sampled at each evaluation; 0 disables
    sample_prompt: str = "\n"
    temperature: float = 0.8
    top_k: int = 200


@dataclass
class CheckpointSection:
    interval: int | None = None  # None: every evaluation; 0: only at the end
    keep_last: int = 2
    keep_best: bool = True


@dataclass
class SystemSection:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16
    compile: bool = False
    threads: int = 0  # torch threads on CPU; 0 leaves torch's default
    distributed: str = "ddp"  # under torchrun: ddp | fsdp (CUDA only)
    peak_flops: float | None = None  # for MFU; None: known GPUs, else a measured matmul peak on CPU


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    system: SystemSection = field(default_factory=SystemSection)
    name: str = "run"  # names the run in the run store

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def lr_decay_iters(self) -> int:
        return self.train.lr_decay_iters if self.train.lr_decay_iters is not None else self.train.max_iters

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model Config: the preset (if any), then the listed fields, vocab_size from the data."""
        values = dict(self.model)
        preset = values.pop("preset", None)
        values.setdefault("vocab_size", vocab_size)
        if values["vocab_size"] < vocab_size:
            raise ConfigError(f"config field model.vocab_size ({values['vocab_size']}) is smaller than the "
                              f"tokenizer's vocabulary ({vocab_size})")
        if preset is not None:
            return ModelConfig.from_name(preset, **values)
        missing = [f for f in ("n_layer", "n_head", "n_embd") if f not in values]
        if missing:
            raise ConfigError(f"config field model.{missing[0]} is missing (or set model.preset)")
        return ModelConfig.from_dict(values)


SECTIONS = {"data": DataConfig, "train": TrainSection, "eval": EvalSection,
            "checkpoint": CheckpointSection, "system": SystemSection}
MODEL_FIELDS = {f.name: f.type for f in dataclasses.fields(ModelConfig)} | {"preset": "str"}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` as the type `annotation` names; text (from the CLI, or YAML's '1e-3') is parsed."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    hints = typing.get_args(annotation) if union else (annotation,)
    if isinstance(value, str) and type(None) in hints and value.strip().lower() in ("null", "none", "~"):
        value = None
    if value is None:
        if type(None) in hints:
            return None
        raise ConfigError(f"config field {key} must not be null")
    for hint in hints:
        origin = typing.get_origin(hint) or hint
        if origin is typing.Literal:
            if value in typing.get_args(hint):
                return value
        elif origin is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
        elif origin in (int, float) and not isinstance(value, bool):
            try:
                number = float(value) if isinstance(value, str) else value
            except ValueError:
                continue
            if origin is float and isinstance(number, (int, float)):
                return float(number)
            if isinstance(number, int) or (isinstance(number, float) and number.is_integer()):
                return int(number)
        elif origin is str:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        elif origin in (list, dict):
            if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise ConfigError(f"config field {key}: cannot parse {value!r}") from None
            if origin is list:
                return [str(v) for v in value] if isinstance(value, list) else [str(value)]
            if isinstance(value, dict):
                return value
        elif hint is Any:
            return value
    names = " or ".join(str(a) if typing.get_origin(h) is typing.Literal else getattr(h, "__name__", str(h))
                        for h in hints for a in (typing.get_args(h) or [h]))
    raise ConfigError(f"config field {key} must be {names}, got {value!r}")


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """A TrainConfig from nested plain values, every key and type checked."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of sections")
    cfg = TrainConfig()
    for key, value in values.items():
        if key == "name":
            cfg.name = str(value)
        elif key == "model":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section model must be a mapping")
            model_hints = _resolved_hints(ModelConfig) | {"preset": str}
            for k, v in value.items():
                if k not in model_hints:
                    raise ConfigError(f"{source}: unknown config field model.{k}")
                cfg.model[k] = _coerce(v, model_hints[k], f"model.{k}")
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section {key} must be a mapping")
            section = getattr(cfg, key)
            hints = _resolved_hints(type(section))
            for k, v in value.items():
                if k not in hints:
                    raise ConfigError(f"{source}: unknown config field {key}.{k}")
                setattr(section, k, _coerce(v, hints[k], f"{key}.{k}"))
        else:
            raise ConfigError(f"{source}: unknown config section {key!r} "
                              f"(known: name, model, {', '.join(SECTIONS)})")
    return cfg


def override_keys() -> list[str]:
    """Every `section.field` the CLI accepts as `--section.field VALUE`."""
    keys = ["name"] + [f"model.{k}" for k in MODEL_FIELDS]
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`values` with dotted `overrides` ({"model.n_layer": "4"}) merged in. Values stay text here;
    `from_dict` parses them against each field's type, so `--eval.sample_prompt ROMEO:` stays text."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    known = set(override_keys())
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            raise ConfigError(f"unknown config override --{key}"
                              + (f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""))
        if "." not in key:
            merged[key] = value
        else:
            section, name = key.split(".", 1)
            if not isinstance(merged.setdefault(section, {}), dict):
                raise ConfigError(f"config section {section} must be a mapping")
            merged[section][name] = value
    return merged


def builtin_configs() -> dict[str, Path]:
    folder = resources.files("llmos.train") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_config(name_or_path: str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A shipped config by name (`shakespeare-char`) or a YAML file, with overrides applied."""
    values: dict[str, Any] = {}
    source = "defaults"
    if name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            shipped = builtin_configs()
            if name_or_path not in shipped:
                raise NotFoundError(f"config {name_or_path!r}: no such file and no shipped config of that name "
                                    f"(shipped: {', '.join(sorted(shipped))})")
            path = shipped[name_or_path]
        source = str(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        values.setdefault("name", path.stem)
    return from_dict(apply_overrides(values, overrides or {}), source=source)
