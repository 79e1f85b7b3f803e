"""Library names: parsing, and that no name can reach outside $LLMOS_HOME/models."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.errors import NotFoundError
from llmos.library import InvalidNameError, ModelName, resolve


def test_parse_names_with_default_tag() -> None:
    assert ModelName.parse("smollm2:135m-instruct") == ModelName("smollm2", "135m-instruct")
    assert ModelName.parse("team/model") == ModelName("team/model", "latest")
    assert str(ModelName.parse("gpt2")) == "gpt2:latest"


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "/abs/path", "a\\b", "%2e%2e%2f", "x\x00y", "a" * 300,
                                 "a/b/c", "name:..", "name:a/b", "Upper", ".hidden", "a/../b"])
def test_bad_names_are_rejected(bad: str, llmos_home: Path) -> None:
    with pytest.raises(InvalidNameError):
        ModelName.parse(bad)


def test_store_paths_stay_inside_home(llmos_home: Path) -> None:
    path = ModelName.parse("team/model:v1").path()
    assert path == (llmos_home / "models" / "team" / "model" / "v1").resolve()


def test_resolve_reports_missing_model(llmos_home: Path) -> None:
    with pytest.raises(NotFoundError, match="llmos pull smollm2:nope"):
        resolve("smollm2:nope")


def test_resolve_accepts_a_folder_path(tiny_model_dir: Path) -> None:
    assert resolve(str(tiny_model_dir)) == tiny_model_dir
