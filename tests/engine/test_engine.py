"""The continuous-batching engine: batched equals alone, seeds, stop strings, UTF-8 streaming,
cancellation and context limits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch

from llmos.checkpoint import load_pretrained
from llmos.engine import SamplingParams, TextStream, generate_tokens
from llmos.engine.engine import Engine, QueueFullError
from llmos.model import ContextLengthError


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_pretrained(tiny_model_dir)


def run_alone(p, prompt: list[int], params: SamplingParams) -> list[int]:
    engine = Engine(p.model, p.tokenizer, max_batch=1)
    try:
        request = engine.submit(prompt, params)
        request.text()
        return request.output_ids
    finally:
        engine.stop()


def test_batched_greedy_equals_each_alone(tiny) -> None:
    tok = tiny.tokenizer
    prompts = [tok.encode(t) for t in ("First Citizen:\nBefore", "All:\nSpeak, speak.", "You", "We are accounted poor")]
    settings = [SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True) for n in (30, 12, 25, 40)]
    alone = [run_alone(tiny, p, s) for p, s in zip(prompts, settings)]
    engine = Engine(tiny.model, tiny.tokenizer, max_batch=3, prefill_chunk=4)  # forces queueing and chunks
    try:
        requests = [engine.submit(p, s) for p, s in zip(prompts, settings)]
        for r in requests:
            r.text()
    finally:
        engine.stop()
    assert [r.output_ids for r in requests] == alone
    assert [len(o) for o in alone] == [30, 12, 25, 40]


def test_engine_matches_plain_reference_loop(tiny) -> None:
    prompt = tiny.tokenizer.encode("MENENIUS:\nWhat work's, my countrymen")
    params = SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True)
    assert run_alone(tiny, prompt, params) == list(generate_tokens(tiny.model, prompt, params))


def test_seed_reproduces_and_differs(tiny) -> None:
    prompt = tiny.tokenizer.encode("MENENIUS:")
    runs = [run_alone(tiny, prompt, SamplingParams(max_new_tokens=30, temperature=1.0, seed=s, ignore_eos=True))
            for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_stop_string_spanning_tokens_is_not_emitted(tiny) -> None:
    # char tokenizer: every character is a token, so any multi-char stop string spans tokens
    prompt = tiny.tokenizer.encode("First")
    free = run_alone(tiny, prompt, SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True))
    text = tiny.tokenizer.decode(free)
    stop = text[10:13]
    engine = Engine(tiny.model, tiny.tokenizer)
    try:
        request = engine.submit(prompt, SamplingParams(max_new_tokens=40, temperature=0, stop=[stop],
                                                       ignore_eos=True))
        out = request.text()
    finally:
        engine.stop()
    assert out == text[:text.index(stop)]
    assert request.finish_reason == "stop"


def test_cancellation_stops_at_next_step(tiny) -> None:
    engine = Engine(tiny.model, tiny.tokenizer)
    try:
        request = engine.submit(tiny.tokenizer.encode("Citizen"), SamplingParams(max_new_tokens=5000,
                                                                              temperature=0, ignore_eos=True))
        events = iter(request)
        next(events)
        request.cancel()
        rest = list(events)
        assert rest[-1].finish_reason == "cancelled"
        assert len(request.output_ids) < 100
        deadline = time.monotonic() + 5  # the engine retires the row right after the final event
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.active == 0
    finally:
        engine.stop()


def test_async_iteration(tiny) -> None:
    engine = Engine(tiny.model, tiny.tokenizer)

    async def main() -> str:
        request = engine.submit(tiny.tokenizer.encode("Second Citizen:"), SamplingParams(max_new_tokens=20, temperature=0),
                                loop=asyncio.get_running_loop())
        return "".join([e.text async for e in request])

    try:
        text = asyncio.run(main())
    finally:
        engine.stop()
    assert len(text) > 0


def test_context_overflow_and_bad_ids_are_clear_errors(tiny) -> None:
    engine = Engine(tiny.model, tiny.tokenizer, max_len=64)
    with pytest.raises(ContextLengthError, match="prompt is too long: 64 tokens"):
        engine.submit([1] * 64, SamplingParams())
    with pytest.raises(ValueError, match="out of vocabulary"):
        engine.submit([tiny.model.config.vocab_size], SamplingParams())
    # generation stops with "length" at the context limit
    request = engine.submit([1] * 60, SamplingParams(max_new_tokens=50, temperature=0, ignore_eos=True))
    request.text()
    engine.stop()
    assert len(request.output_ids) == 4 and request.finish_reason == "length"


def test_queue_is_bounded(tiny) -> None:
    engine = Engine(tiny.model, tiny.tokenizer, max_batch=1, max_queue=2)
    engine._stop = False
    engine.start = lambda: engine  # keep the engine thread off so the queue cannot drain
    engine.submit([1, 2], SamplingParams(max_new_tokens=1))
    engine.submit([1, 2], SamplingParams(max_new_tokens=1))
    with pytest.raises(QueueFullError, match="queue is full"):
        engine.submit([1, 2], SamplingParams(max_new_tokens=1))


def test_utf8_stream_never_splits_characters(smollm2_dir: Path) -> None:
    from llmos.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(smollm2_dir)
    text = "你好，世界！Emoji: 😀🎉 and naïve café — 日本語のテキスト"
    ids = tok.encode(text)
    assert len(ids) > len(text) // 2  # multi-byte characters are split over several byte tokens
    stream = TextStream(tok)
    deltas = [stream.push(t) for t in ids] + [stream.finish()]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


def test_greedy_matches_transformers_on_real_model(smollm2_dir: Path, hf_smollm2) -> None:
    ref, _ = hf_smollm2
    p = load_pretrained(smollm2_dir)
    prompts = [p.tokenizer.encode(t) for t in ("The capital of France is", "def fibonacci(n):",
                                              "Once upon a time, in a small village,")]
    engine = Engine(p.model, p.tokenizer, max_batch=3)
    try:
        requests = [engine.submit(x, SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True))
                    for x in prompts]
        for r in requests:
            r.text()
    finally:
        engine.stop()
    for prompt, request in zip(prompts, requests):
        with torch.no_grad():
            out = ref.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False)
        assert request.output_ids == out[0, len(prompt):].tolist()


def test_zero_new_tokens_finishes_without_work(tiny) -> None:
    engine = Engine(tiny.model, tiny.tokenizer)
    request = engine.submit([1, 2, 3], SamplingParams(max_new_tokens=0))
    assert request.text() == "" and request.output_ids == [] and request.finish_reason == "length"
    engine.stop()


def test_a_failing_step_fails_its_requests_and_the_engine_lives_on(tiny, monkeypatch) -> None:
    engine = Engine(tiny.model, tiny.tokenizer)
    calls = {"n": 0}
    forward = tiny.model.forward

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected fault")
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny.model, "forward", flaky)
    try:
        first = engine.submit([1, 2, 3], SamplingParams(max_new_tokens=5, temperature=0))
        events = list(first)
        assert events[-1].finish_reason == "error" and "RuntimeError" in events[-1].error
        second = engine.submit([1, 2, 3], SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True))
        second.text()
        assert len(second.output_ids) == 5
    finally:
        engine.stop()
