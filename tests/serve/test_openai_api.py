"""The API through the official `openai` client and plain HTTP, against a real `llmos serve`
process with the tiny model: shapes, usage counts, logprobs, echo, streaming details, errors."""

from __future__ import annotations

import base64
import concurrent.futures
import json

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY, raw_http

CHAT = [{"role": "user", "content": "Hello there"}]


def sse_events(text: str) -> list:
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_models_list_and_retrieve(tiny_server):
    client = tiny_server.client()
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny", "tiny-b"]
    assert client.models.retrieve("tiny-b").id == "tiny-b"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_completion_greedy_is_deterministic_with_exact_usage(tiny_server):
    client = tiny_server.client()
    a = client.completions.create(model="tiny", prompt="To be or not", max_tokens=12, temperature=0)
    b = client.completions.create(model="tiny", prompt="To be or not", max_tokens=12, temperature=0)
    assert a.choices[0].text == b.choices[0].text and len(a.choices[0].text) > 0
    assert a.choices[0].finish_reason == "length"
    # char tokenizer: one token per character
    assert a.usage.prompt_tokens == len("To be or not")
    assert a.usage.completion_tokens == 12
    assert a.usage.total_tokens == a.usage.prompt_tokens + 12
    tokens = httpx.post(tiny_server.url + "/tokenize", json={"model": "tiny", "prompt": "To be or not"}).json()
    assert tokens["count"] == a.usage.prompt_tokens


def test_completion_prompt_forms_n_and_seed(tiny_server):
    client = tiny_server.client()
    ids = httpx.post(tiny_server.url + "/tokenize", json={"model": "tiny", "prompt": "Good morrow"}).json()["tokens"]
    from_text = client.completions.create(model="tiny", prompt="Good morrow", max_tokens=6, temperature=0)
    from_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    assert from_ids.choices[0].text == from_text.choices[0].text
    assert from_ids.usage.prompt_tokens == len(ids)  # no start token added to id prompts
    batch = client.completions.create(model="tiny", prompt=[ids, ids[:3]], max_tokens=4, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.usage.prompt_tokens == len(ids) + 3
    many = client.completions.create(model="tiny", prompt=["A", "B"], n=2, max_tokens=3, seed=7, temperature=1.0)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    again = client.completions.create(model="tiny", prompt=["A", "B"], n=2, max_tokens=3, seed=7, temperature=1.0)
    assert [c.text for c in many.choices] == [c.text for c in again.choices]  # seeded: reproducible
    assert many.usage.completion_tokens == 12


def test_completion_logprobs_and_echo(tiny_server):
    client = tiny_server.client()
    r = client.completions.create(model="tiny", prompt="Hark", max_tokens=3, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and token in top and len(top) <= 3
        assert max(top.values()) == pytest.approx(logprob)  # greedy picks the most likely token
    for max_tokens in (0, 1):
        e = client.completions.create(model="tiny", prompt="Hark", max_tokens=max_tokens, echo=True, logprobs=1,
                                      temperature=0)
        choice = e.choices[0]
        assert choice.text.startswith("Hark") and len(choice.text) == 4 + max_tokens
        assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
        assert len(choice.logprobs.tokens) == 4 + max_tokens
        for token, logprob, top in zip(choice.logprobs.tokens[1:], choice.logprobs.token_logprobs[1:],
                                       choice.logprobs.top_logprobs[1:]):
            assert token in top and top[token] == pytest.approx(logprob, abs=1e-4)
        assert e.usage.completion_tokens == max_tokens
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="Hark", max_tokens=0)  # 0 only makes sense with echo


def test_echo_prompt_logprobs_match_generation_logprobs(tiny_server):
    """The logprob of a generated token equals the prompt logprob of the same token when echoed."""
    client = tiny_server.client()
    gen = client.completions.create(model="tiny", prompt="Hark", max_tokens=1, temperature=0, logprobs=0)
    full = "Hark" + gen.choices[0].text
    echo = client.completions.create(model="tiny", prompt=full, max_tokens=0, echo=True, logprobs=0)
    assert echo.choices[0].logprobs.token_logprobs[-1] == pytest.approx(
        gen.choices[0].logprobs.token_logprobs[0], abs=1e-4)


def test_chat_plain_and_streamed_with_usage(tiny_server):
    client = tiny_server.client()
    plain = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0)
    assert plain.choices[0].message.role == "assistant"
    assert plain.object == "chat.completion" and plain.usage.completion_tokens == 8
    stream = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices]
    assert all(c.choices[0].delta is not None for c in content_chunks)
    assert [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason] == ["length"]
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_chat_logprobs(tiny_server):
    client = tiny_server.client()
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    assert "".join(c.token for c in content) == r.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert bytes(entry.bytes).decode() == entry.token
    streamed = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, temperature=0,
                                              logprobs=True, top_logprobs=1, stream=True)
    tokens = [e.token for c in streamed if c.choices and c.choices[0].logprobs
              for e in c.choices[0].logprobs.content]
    assert tokens == [c.token for c in content]


def test_chat_compatibility_details(tiny_server):
    """Content parts, the developer role, unknown fields, max_completion_tokens, stream=false,
    no Accept header for streams, and an empty bearer header with auth off."""
    url = tiny_server.url + "/v1/chat/completions"
    body = {"model": "tiny", "messages": [{"role": "developer", "content": "Be brief"},
                                          {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                                       {"type": "text", "text": "there"}]}],
            "max_completion_tokens": 3, "stream": False, "temperature": 0, "frobnicate": {"x": 1},
            "metadata": {"k": "v"}, "user": "u1", "store": False}
    status, raw = raw_http(tiny_server, "POST", "/v1/chat/completions", json.dumps(body).encode(),
                           {"Content-Type": "application/json", "Authorization": "Bearer "})
    assert status == 200, raw
    assert json.loads(raw)["usage"]["completion_tokens"] == 3
    both = httpx.post(url, json={**body, "max_tokens": 5, "max_completion_tokens": 2}).json()
    assert both["usage"]["completion_tokens"] == 2
    streamed = httpx.post(url, json={**body, "stream": True}, headers={"Accept": "*/*"})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    finishes = [c["choices"][0]["finish_reason"] for c in events[:-1] if c["choices"][0]["finish_reason"]]
    assert finishes == ["length"]


def test_completion_stream_with_usage_and_stop(tiny_server):
    client = tiny_server.client()
    full = client.completions.create(model="tiny", prompt="Romeo", max_tokens=20, temperature=0).choices[0].text
    stop = full[5:7]
    assert stop
    r = client.completions.create(model="tiny", prompt="Romeo", max_tokens=20, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and stop not in r.choices[0].text
    assert full.startswith(r.choices[0].text)
    chunks = list(client.completions.create(model="tiny", prompt="Romeo", max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20


def test_sampling_fields_are_accepted(tiny_server):
    client = tiny_server.client()
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=5, temperature=0.8, top_p=0.9,
                                  presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"3": 5, "4": -100},
                                  seed=1, extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1})
    assert r.usage.completion_tokens == 5
    greedy_biased = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, temperature=0,
                                              logit_bias={"5": 100})
    forced = httpx.post(tiny_server.url + "/detokenize", json={"model": "tiny", "tokens": [5, 5, 5]}).json()
    assert greedy_biased.choices[0].text == forced["prompt"]


def test_embeddings_float_and_base64(tiny_server):
    import numpy as np

    client = tiny_server.client()
    r = client.embeddings.create(model="tiny", input=["Hello", "Goodbye"], encoding_format="float")
    assert len(r.data) == 2 and len(r.data[0].embedding) == 64  # tiny-llama hidden size
    assert r.usage.prompt_tokens == len("Hello") + len("Goodbye")
    raw = httpx.post(tiny_server.url + "/v1/embeddings",
                     json={"model": "tiny", "input": "Hello", "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vector, r.data[0].embedding, atol=1e-5)
    # The openai client asks for base64 by default and decodes it itself.
    assert np.allclose(client.embeddings.create(model="tiny", input="Hello").data[0].embedding, vector, atol=1e-5)


def test_tokenizer_routes_health_and_metrics(tiny_server):
    url = tiny_server.url
    info = httpx.get(url + "/tokenizer_info", params={"model": "tiny"}).json()
    assert info["vocab_size"] > 0 and info["max_model_len"] == 256 and "assistant" in info["chat_template"]
    ids = httpx.post(url + "/tokenize", json={"model": "tiny", "prompt": "Hello"}).json()["tokens"]
    assert httpx.post(url + "/detokenize", json={"model": "tiny", "tokens": ids}).json()["prompt"] == "Hello"
    chat = httpx.post(url + "/tokenize", json={"model": "tiny", "messages": CHAT}).json()
    assert chat["count"] == len("user: Hello there\nassistant:")
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    metrics = httpx.get(url + "/metrics").text
    for name in ("llmos_requests_total", "llmos_prompt_tokens_total", "llmos_completion_tokens_total",
                 "llmos_queue_depth", "llmos_time_to_first_token_seconds_bucket", "llmos_tokens_per_second"):
        assert name in metrics


def test_openai_client_errors(tiny_server, keyed_server):
    client = tiny_server.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10**9)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x" * 300, max_tokens=1)
    assert e.value.code == "context_length_exceeded" and "prompt is too long" in e.value.message
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client(api_key="sk-wrong").models.list()
    assert [m.id for m in keyed_server.client(api_key=API_KEY).models.list()] == ["tiny:latest"]


def test_two_models_answer_independently(tiny_server):
    client = tiny_server.client()
    a = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5, temperature=0)
    b = client.chat.completions.create(model="tiny-b", messages=CHAT, max_tokens=5, temperature=0)
    assert (a.model, b.model) == ("tiny", "tiny-b")
    assert a.choices[0].message.content == b.choices[0].message.content  # same weights under two names


def test_fifty_concurrent_streamed_chats(tiny_server):
    """50 concurrent streams each get exactly the output they get alone, and all finish. Sampling
    is seeded per request, so any mix-up between batch rows would show as a different text."""
    client = tiny_server.client()
    prompts = [f"Speak {a}{b} now" for a in "abcdefghij" for b in "ABCDE"]  # the char vocab has no digits

    def alone(prompt: str) -> str:
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                           max_tokens=12, temperature=1.0, seed=prompts.index(prompt))
        return r.choices[0].message.content

    def streamed(prompt: str) -> tuple[str, list[str | None], int]:
        chunks = list(client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=12, temperature=1.0,
            seed=prompts.index(prompt), stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        return text, finishes, chunks[-1].usage.completion_tokens

    expected = [alone(p) for p in prompts[:10]]  # a sample of references, computed one at a time
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(streamed, prompts, timeout=180))
    assert all(finishes == ["length"] and usage == 12 for _, finishes, usage in results)
    assert [text for text, _, _ in results[:10]] == expected
    assert len({text for text, _, _ in results}) > 40  # different seeds, different answers
