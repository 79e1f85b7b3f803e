"""Training configs: the shipped baby GPT matches nanoGPT, every bad key or value is named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from llmos.errors import ConfigError, NotFoundError
from llmos.train import add_commands
from llmos.train.config import load_config


def test_shipped_baby_gpt_is_nanogpts_cpu_setting() -> None:
    cfg = load_config("shakespeare-char")
    m = cfg.model_config(vocab_size=65)
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout, m.bias) == (4, 4, 128, 64, 0.0, False)
    assert (m.norm, m.position, m.mlp, m.tie_embeddings) == ("layernorm", "learned", "gelu", True)
    t = cfg.train
    assert (t.batch_size, t.gradient_accumulation_steps, t.max_iters, t.learning_rate, t.min_lr) == \
        (12, 1, 2000, 1e-3, 1e-4)
    assert (t.warmup_iters, cfg.lr_decay_iters, t.weight_decay, t.beta1, t.beta2, t.grad_clip) == \
        (100, 2000, 0.1, 0.9, 0.99, 1.0)
    assert (cfg.eval.interval, cfg.eval.iters, cfg.data.tokenizer, cfg.data.val_fraction) == (250, 20, "char", 0.1)


def test_every_shipped_config_loads() -> None:
    from llmos.train.config import builtin_configs

    for name in builtin_configs():
        load_config(name).model_config(vocab_size=65)


def test_overrides_are_typed() -> None:
    cfg = load_config("shakespeare-char", {"model.n_layer": "2", "train.learning_rate": "3e-3",
                                           "train.lr_decay_iters": "null", "system.compile": "true",
                                           "data.sources": "a.txt", "eval.sample_prompt": "ROMEO:"})
    assert cfg.model["n_layer"] == 2 and cfg.train.learning_rate == 3e-3 and cfg.train.lr_decay_iters is None
    assert cfg.system.compile is True and cfg.data.sources == ["a.txt"] and cfg.eval.sample_prompt == "ROMEO:"
    assert cfg.lr_decay_iters == cfg.train.max_iters


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown config override --model.n_layr \(did you mean --model.n_layer"):
        load_config("shakespeare-char", {"model.n_layr": "4"})
    with pytest.raises(ConfigError, match=r"unknown config override --optim\.lr"):
        load_config("shakespeare-char", {"optim.lr": "1"})


def test_bad_values_and_missing_fields_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config field train\.batch_size must be int, got 'twelve'"):
        load_config("shakespeare-char", {"train.batch_size": "twelve"})
    with pytest.raises(ConfigError, match=r"config field model\.norm must be rmsnorm or layernorm"):
        load_config("shakespeare-char", {"model.norm": "batchnorm"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  n_layer: 2\n  n_head: 2\ntrain:\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"config field model.n_embd is missing"):
        load_config(str(bad)).model_config(vocab_size=65)
    bad.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config field train.batch_sise"):
        load_config(str(bad))
    with pytest.raises(NotFoundError, match="no shipped config of that name"):
        load_config("no-such-config")


def test_cli_collects_dotted_overrides() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pretrain", "--config", "shakespeare-char", "--model.n_layer", "4",
                              "--train.learning_rate=3e-3", "--name", "baby"])
    assert args.overrides == {"model.n_layer": "4", "train.learning_rate": "3e-3"} and args.name == "baby"
