"""A small prepared corpus and a tiny config, so each training test runs in a few seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmos.train.config import TrainConfig, from_dict


@pytest.fixture(scope="session")
def tiny_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmos.data import prepare

    root = tmp_path_factory.mktemp("tiny-data")
    text = root / "shakespeare.txt"
    text.write_text((shared_data / "tinyshakespeare.txt").read_text()[:100_000])
    prepare([text], "char", root / "prepared")
    return root / "prepared"


def tiny_values(data: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "tiny",
        "model": {"preset": "baby-gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
        "data": {"path": str(data)},
        "train": {"batch_size": 8, "max_iters": 12, "warmup_iters": 2, "learning_rate": 3e-3, "min_lr": 3e-4,
                  "log_interval": 1},
        "eval": {"interval": 4, "iters": 2, "sample_tokens": 16},
        "checkpoint": {"keep_last": 2},
        "system": {"threads": 1},
    }
    for section, changes in sections.items():
        values[section] = {**values.get(section, {}), **changes}
    return values


@pytest.fixture
def tiny_cfg(tiny_data: Path):
    def make(**sections: dict[str, Any]) -> TrainConfig:
        return from_dict(tiny_values(tiny_data, **sections))

    return make
