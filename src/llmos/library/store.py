"""Where models live: `$LLMOS_HOME/models/<name>/<tag>/`, addressed as `name:tag`.

Names are checked before they touch the filesystem, so no name can point outside the store.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmos.errors import LlmosError, NotFoundError

DEFAULT_TAG = "latest"
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
MAX_NAME = 200


class InvalidNameError(LlmosError):
    """A model name that is not of the form name[:tag] with safe characters."""


def home() -> Path:
    return Path(os.environ.get("LLMOS_HOME") or Path.home() / ".llmos")


def models_dir() -> Path:
    return home() / "models"


def cache_dir() -> Path:
    return home() / "cache"


@dataclass(frozen=True)
class ModelName:
    name: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    @classmethod
    def parse(cls, text: str) -> ModelName:
        if not isinstance(text, str) or not text or len(text) > MAX_NAME or "\x00" in text:
            raise InvalidNameError(f"invalid model name {text[:40]!r}: empty, too long or contains NUL")
        name, _, tag = text.partition(":")
        segments = name.split("/")
        if len(segments) > 2 or not all(_SEGMENT.fullmatch(s) and ".." not in s for s in segments):
            raise InvalidNameError(
                f"invalid model name {text!r}: use lowercase letters, digits, '.', '_', '-' "
                "(optionally one 'namespace/' prefix) and an optional ':tag'")
        if (tag and not _TAG.fullmatch(tag)) or ".." in tag:
            raise InvalidNameError(f"invalid model tag {tag!r} in {text!r}")
        return cls(name, tag or DEFAULT_TAG)

    def path(self) -> Path:
        root = models_dir().resolve()
        path = (root / self.name / self.tag).resolve()
        if root not in path.parents:  # defence in depth: parse() already forbids escapes
            raise InvalidNameError(f"model name {self} escapes the store")
        return path


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The folder of a model given by library name (`smollm2:135m-instruct`) or by path."""
    text = str(name_or_path)
    candidate = Path(name_or_path)
    try:
        if candidate.is_dir() and (candidate / "config.json").exists():
            return candidate
        if text.endswith(".gguf") and candidate.is_file():
            return candidate
    except (OSError, ValueError):  # over-long or NUL-containing: not a path we can use; parse() says why
        pass
    try:
        path = ModelName.parse(text).path()
    except InvalidNameError:
        if os.sep in text or text.startswith("."):
            raise NotFoundError(f"{text}: no model folder (with config.json) or .gguf file at this path") from None
        raise
    if not (path / "config.json").exists():
        raise NotFoundError(f"model {text!r} not found in {models_dir()}; try `llmos pull {text}` or `llmos list`")
    return path


def list_models() -> list[tuple[ModelName, Path]]:
    root = models_dir()
    found = []
    for config in sorted(root.glob("*/*/config.json")) + sorted(root.glob("*/*/*/config.json")):
        rel = config.parent.relative_to(root).parts
        if any(p.startswith(".") for p in rel):
            continue
        found.append((ModelName("/".join(rel[:-1]), rel[-1]), config.parent))
    return found
