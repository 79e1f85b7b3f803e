"""`response_format: {"type": "json_object"}`: constrained sampling that can only produce a JSON object.

A small pushdown recogniser tracks where the generated text stands in the JSON grammar (which
containers are open, whether we are in a key, a string escape, a number, a literal). Before each
token is chosen, candidate tokens are tried in descending logit order and the ones whose text
would leave valid JSON are kept (all others get -inf). Only the best few candidates are checked,
not the whole 49k vocabulary, because the model nearly always ranks a valid token near the top.
When the outermost object closes, the end-of-sequence token is forced.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

# (open containers as a string of "{" / "[", mode, mode detail, whitespace run length)
State = tuple[str, str, Any, int]

START: State = ("", "start", None, 0)
_WS = " \t\n\r"
_MAX_WS = 24  # a model that loops on newlines must still get to a token that makes progress
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
_DIGITS = "0123456789"


def _closed(stack: str) -> State:
    """State after a complete value inside `stack`."""
    return (stack, "after", None, 0) if stack else ("", "done", None, 0)


def _value_start(stack: str, mode: str, ch: str, ws: int) -> State | None:
    if ch in _WS:
        return (stack, mode, None, ws + 1) if ws < _MAX_WS else None
    if ch == "{":
        return (stack + "{", "key_or_close", None, 0)
    if mode == "start":  # json_object: the top level must be an object
        return None
    if ch == "[":
        return (stack + "[", "value_or_close", None, 0)
    if ch == '"':
        return (stack, "string", (False, 0), 0)
    if ch == "-":
        return (stack, "number", "-", 0)
    if ch == "0":
        return (stack, "number", "0", 0)
    if ch in "123456789":
        return (stack, "number", "d", 0)
    if ch in _LITERALS:
        return (stack, "literal", _LITERALS[ch], 0)
    if ch == "]" and mode == "value_or_close":
        return _closed(stack[:-1])
    return None


_NUMBER_NEXT = {  # number part -> {char class: next part}; "end" means the number may stop here
    "-": {"0": "0", "1": "d"},
    "0": {".": ".", "e": "e", "end": True},
    "d": {"digit": "d", ".": ".", "e": "e", "end": True},
    ".": {"digit": "f"},
    "f": {"digit": "f", "e": "e", "end": True},
    "e": {"sign": "s", "digit": "x"},
    "s": {"digit": "x"},
    "x": {"digit": "x", "end": True},
}


def _number(stack: str, part: str, ch: str) -> State | None:
    table = _NUMBER_NEXT[part]
    if ch in _DIGITS:
        nxt = table.get("digit") or (table.get("0") if ch == "0" else table.get("1"))
    elif ch == ".":
        nxt = table.get(".")
    elif ch in "eE":
        nxt = table.get("e")
    elif ch in "+-":
        nxt = table.get("sign")
    else:
        nxt = None
    if nxt is not None:
        return (stack, "number", nxt, 0)
    if table.get("end"):  # the number ended; this character belongs to what follows it
        return step(_closed(stack), ch)
    return None


def step(state: State, ch: str) -> State | None:
    """The state after one more character, or None if the text can no longer be valid JSON."""
    stack, mode, detail, ws = state
    if mode == "string":
        is_key, escape = detail
        if escape == 0:
            if ch == '"':
                return (stack, "colon", None, 0) if is_key else _closed(stack)
            if ch == "\\":
                return (stack, mode, (is_key, -1), 0)
            return None if ch < " " else state
        if escape == -1:  # just after a backslash
            if ch in '"\\/bfnrt':
                return (stack, mode, (is_key, 0), 0)
            return (stack, mode, (is_key, 4), 0) if ch == "u" else None
        if ch in "0123456789abcdefABCDEF":  # \uXXXX, `escape` hex digits still to come
            return (stack, mode, (is_key, escape - 1 if escape > 1 else 0), 0)
        return None
    if mode in ("start", "value", "value_or_close"):
        return _value_start(stack, mode, ch, ws)
    if mode == "number":
        return _number(stack, detail, ch)
    if mode == "literal":
        if ch != detail[0]:
            return None
        return (stack, mode, detail[1:], 0) if len(detail) > 1 else _closed(stack)
    if ch in _WS:
        return (stack, mode, detail, ws + 1) if ws < _MAX_WS else None
    if mode == "done":
        return None
    if mode in ("key_or_close", "key"):
        if ch == '"':
            return (stack, "string", (True, 0), 0)
        return _closed(stack[:-1]) if ch == "}" and mode == "key_or_close" else None
    if mode == "colon":
        return (stack, "value", None, 0) if ch == ":" else None
    if mode == "after":
        top = stack[-1]
        if ch == ",":
            return (stack, "key" if top == "{" else "value", None, 0)
        if (ch == "}" and top == "{") or (ch == "]" and top == "["):
            return _closed(stack[:-1])
    return None


def advance(state: State | None, text: str) -> State | None:
    for ch in text:
        if state is None:
            return None
        state = step(state, ch)
    return state


def is_complete_object(text: str) -> bool:
    state = advance(START, text)
    return state is not None and state[1] == "done"


_TOKEN_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_texts(tokenizer: Any) -> list[str]:
    """Each token's text on its own ("" for special tokens), computed once per tokenizer."""
    texts = _TOKEN_TEXTS.get(tokenizer)
    if texts is None:
        backend = tokenizer.backend
        texts = backend.decode_batch([[i] for i in range(tokenizer.vocab_size)], skip_special_tokens=True)
        _TOKEN_TEXTS[tokenizer] = texts
    return texts


class JsonObjectProcessor:
    """A logits processor (see SamplingParams.logits_processors) for one sequence."""

    def __init__(self, tokenizer: Any, eos_ids: frozenset[int] | set[int], greedy: bool,
                 candidates: int = 48) -> None:
        self.tokenizer = tokenizer
        self.texts = token_texts(tokenizer)
        self.eos = sorted(eos_ids)
        self.want = 1 if greedy else candidates  # how many valid tokens to offer the sampler
        self._seen_text = ""
        self._state: State | None = START

    def _current(self, output_ids: list[int]) -> State | None:
        text = self.tokenizer.decode(output_ids, skip_special_tokens=True)
        if text.startswith(self._seen_text):
            self._state = advance(self._state, text[len(self._seen_text):])
        else:  # a multi-byte character completed differently than predicted: parse again
            self._state = advance(START, text)
        self._seen_text = text
        return self._state

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        state = self._current(output_ids)
        masked = torch.full_like(logits, float("-inf"))
        if state is None or state[1] == "done":
            masked[self.eos] = 0.0
            return masked
        vocab = min(len(self.texts), logits.numel())
        valid: list[int] = []
        checked = 0
        # Look at the best-ranked tokens first, widening the window only when none of them fit.
        for window in (64, 1024, logits.numel()):
            window = min(window, logits.numel())
            order = torch.topk(logits, window).indices.tolist()
            for token in order[checked:]:
                if token < vocab and self.texts[token] and advance(state, self.texts[token]) is not None:
                    valid.append(token)
                    if len(valid) >= self.want:
                        break
            checked = window
            if valid or window == logits.numel():
                break
        if not valid:
            masked[self.eos] = 0.0
            return masked
        index = torch.tensor(valid)
        masked[index] = logits[index]
        return masked
