"""Render Hugging Face chat templates (Jinja2) the way transformers does.

Templates come from model files downloaded from anywhere, so they run in Jinja's immutable sandbox.
The environment settings, helper functions and variables mirror transformers' `apply_chat_template`,
because a prompt that differs by one newline from what the model was fine-tuned on degrades it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmos.errors import LlmosError


class ChatTemplateError(LlmosError):
    """The chat template is broken, or it rejected the messages (e.g. roles that do not alternate)."""


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks in transformers.
    We only render, so the block just emits its body; without this such templates would not parse."""

    tags = {"generation"}  # noqa: RUF012 - Jinja reads this class attribute

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_emit", []), [], [], body).set_lineno(lineno)

    def _emit(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes `<`, `>` and `&`, which would change tool schemas in prompts.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """Compile (and cache) a chat template; a syntax error becomes a `ChatTemplateError`."""
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"chat template has a syntax error at line {exc.lineno}: {exc.message}") from exc


def _plain(value: Any) -> Any:
    """A copy of `value` made only of JSON-like types.

    The sandbox only knows the methods of built-in types are safe, so anything richer a caller passes
    (pydantic models, dataclasses, numpy scalars) is turned into plain data first.
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    if callable(getattr(value, "item", None)) and type(value).__module__ == "numpy":
        return _plain(value.item())
    return f"<{type(value).__name__}>"


_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _normalise_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"chat messages must be dicts, got {type(message).__name__}")
        # APIs such as OpenAI's send `content: null`; templates handle a missing key but print "None".
        clean = {k: v for k, v in message.items() if v is not None}
        reasoning = next((clean[k] for k in _REASONING_KEYS if k in clean), None)
        if reasoning is not None:
            # Templates read the model's reasoning under different names; offer it under all of them.
            clean = {"thinking": reasoning, **clean, "reasoning_content": reasoning}
        out.append(clean)
    return out


def render(source: str, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool,
           variables: Mapping[str, Any], tools: Any = None, documents: Any = None) -> str:
    """Render `source` for `messages`. `variables` holds bos_token/eos_token and any extra kwargs."""
    template = compile_template(source)
    chat = _plain(_normalise_messages(messages))
    try:
        # tools/documents are always passed, as None when absent: templates test `tools is not none`.
        return template.render(
            messages=chat, tools=_plain(tools), documents=_plain(documents),
            add_generation_prompt=add_generation_prompt, **_plain(dict(variables)),
        )
    except ChatTemplateError:
        raise
    except Exception as exc:
        # The template is foreign code: whatever it raises (raise_exception, a TypeError on list
        # content, ...) means it could not render these messages.
        raise ChatTemplateError(f"chat template failed: {exc}") from exc


# --- Keeping special-token text in messages from acting as special tokens ------------------------
# Two private-use code points wrap every special-token string that comes from the caller's data.
# After rendering, wrapped occurrences are encoded as plain text and unwrapped ones (written by the
# template itself) as real special tokens.

MARK_START = "\U000f0000"
MARK_END = "\U000f0001"


def special_pattern(specials: Sequence[str]) -> re.Pattern[str]:
    """A regex matching any of `specials`, longest first so `<|a|>` loses to `<|a|>x` where both exist."""
    ordered = sorted(set(specials), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered)) or r"(?!)")


def mark(value: Any, specials: re.Pattern[str]) -> Any:
    """Wrap special-token text inside every string of `value` (dict keys excepted) in markers."""
    if isinstance(value, str):
        # Drop markers the caller put there, so a wrapped token cannot be forged or unwrapped.
        value = value.replace(MARK_START, "").replace(MARK_END, "")
        return specials.sub(lambda m: MARK_START + m.group(0) + MARK_END, value)
    if isinstance(value, Mapping):
        return {k: mark(v, specials) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mark(v, specials) for v in value]
    return value


def marked_pieces(rendered: str, specials: re.Pattern[str]) -> list[tuple[str, bool]]:
    """Split a rendered prompt into `(text, is_special)` pieces.

    Marked special-token text is folded into the surrounding plain text; a marker left alone (a
    template can cut strings apart) is dropped. Only unmarked special tokens come out as specials.
    """
    scanner = re.compile(
        f"{MARK_START}(?:{specials.pattern}){MARK_END}|[{MARK_START}{MARK_END}]|(?P<special>{specials.pattern})"
    )
    pieces: list[tuple[str, bool]] = []
    buffer: list[str] = []
    position = 0
    for match in scanner.finditer(rendered):
        buffer.append(rendered[position:match.start()])
        position = match.end()
        if match.group("special") is not None:
            pieces.append(("".join(buffer), False))
            buffer = []
            pieces.append((match.group("special"), True))
        else:
            buffer.append(match.group(0).replace(MARK_START, "").replace(MARK_END, ""))
    buffer.append(rendered[position:])
    pieces.append(("".join(buffer), False))
    return pieces
