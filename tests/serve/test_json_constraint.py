"""The JSON-object recogniser and logits processor behind `response_format: json_object`."""

from __future__ import annotations

import json
import time

import pytest
import torch

from llmos.serve.json_constraint import START, JsonObjectProcessor, advance, is_complete_object

VALID = ['{}', '{"a": 1}', '{"a": [1, 2.5, -3e+2, true, false, null, "x\\n\\u00e9"]}', ' { "k" : { "n" : [] } } ',
         '{"a": {"b": {"c": [[], {}]}}, "d": "\\"quoted\\""}', '{"x": 0, "y": -0.0, "z": 1E9}', '{"é": "ü"}']
INVALID_PREFIXES = ['[', '1', '"x"', '{a', '{"a" 1', '{"a": 01', '{"a": tru ', '{"a": [1,]', '{"a": 1,}',
                    '{"a": "\\x"}', '{"a": -}', '{"a": 1.}', '{"a": "line\nbreak"}', '{} x', '{"a": 1}}']


@pytest.mark.parametrize("text", VALID)
def test_valid_objects_are_accepted_and_complete(text):
    json.loads(text)
    assert is_complete_object(text)
    for cut in range(len(text)):  # every prefix of a valid object is a valid prefix
        assert advance(START, text[:cut]) is not None


@pytest.mark.parametrize("text", INVALID_PREFIXES)
def test_invalid_text_is_rejected(text):
    assert advance(START, text) is None


def test_incomplete_objects_are_not_complete():
    for text in ('{', '{"a": 1', '{"a": [1, 2]', '{"a": "x'):
        assert advance(START, text) is not None and not is_complete_object(text)


class CharTokenizer:
    """Token i is the i-th character of `chars`; the last id is EOS."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.vocab_size = len(chars) + 1
        self.eos_ids = frozenset({len(chars)})

        class Backend:
            @staticmethod
            def decode_batch(batch, skip_special_tokens=True):
                return [chars[ids[0]] if ids[0] < len(chars) else "" for ids in batch]

        self.backend = Backend()

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.chars[i] for i in ids if i < len(self.chars))


def test_processor_forces_valid_json_from_random_logits():
    tokenizer = CharTokenizer('{}[]":,. -+eE0123456789abcdeflnrstu\\\n')
    torch.manual_seed(0)
    for trial in range(5):
        processor = JsonObjectProcessor(tokenizer, tokenizer.eos_ids, greedy=trial % 2 == 0)
        out: list[int] = []
        for _ in range(200):
            logits = processor(out, torch.randn(tokenizer.vocab_size))
            if trial % 2 == 0:
                token = int(torch.argmax(logits))
            else:
                token = int(torch.multinomial(torch.softmax(logits, -1), 1))
            if token in tokenizer.eos_ids:
                break
            out.append(token)
        text = tokenizer.decode(out)
        assert advance(START, text) is not None, text
        if token in tokenizer.eos_ids:
            assert isinstance(json.loads(text), dict)


def test_processor_is_fast_on_a_large_vocabulary():
    # 49k tokens of mixed text; only the best-ranked candidates are examined per step.
    chars = [chr(c) for c in range(32, 127)]
    words = [a + b + c for a in chars[:40] for b in chars for c in chars[:13]][:49_000]
    words[:3] = ["{", '"', "}"]

    class Tok(CharTokenizer):
        def __init__(self) -> None:
            self.vocab_size = len(words) + 1
            self.eos_ids = frozenset({len(words)})

            class Backend:
                @staticmethod
                def decode_batch(batch, skip_special_tokens=True):
                    return [words[i[0]] if i[0] < len(words) else "" for i in batch]

            self.backend = Backend()

        def decode(self, ids, skip_special_tokens=True):
            return "".join(words[i] for i in ids if i < len(words))

    tok = Tok()
    processor = JsonObjectProcessor(tok, tok.eos_ids, greedy=True)
    t0 = time.perf_counter()
    out: list[int] = []
    for _ in range(30):
        token = int(torch.argmax(processor(out, torch.randn(tok.vocab_size))))
        if token in tok.eos_ids:
            break
        out.append(token)
    assert (time.perf_counter() - t0) / max(1, len(out)) < 0.05  # well under 50 ms a token
    assert advance(START, tok.decode(out)) is not None


@pytest.mark.slow
def test_json_object_mode_on_the_real_model(smol_server):
    """Every reply is valid JSON so far; a finished reply is a complete object (the model decides
    when to close it: a 135M model sometimes rambles on until max_tokens)."""
    client = smol_server.client()
    finished = 0
    for temperature, seed in ((0, 0), (0.7, 1), (0.7, 2)):
        r = client.chat.completions.create(
            model="smollm2", max_tokens=120, temperature=temperature, seed=seed,
            response_format={"type": "json_object"},
            messages=[{"role": "user", "content": 'Reply with a JSON object with keys "city" and "country" only.'}])
        content = r.choices[0].message.content
        assert advance(START, content) is not None, content
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(content), dict)
            finished += 1
    assert finished >= 1
