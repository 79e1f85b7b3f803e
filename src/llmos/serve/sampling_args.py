"""Request fields to the engine's `SamplingParams`, with the server's limits checked first.

Every numeric field is bounded here, so an absurd value (n=10**6, 100 stop strings, 10**5
logit_bias keys, max_tokens=2**63) is a fast 400 rather than work for the engine.
"""

from __future__ import annotations

from typing import Any

from llmos.errors import LlmosError
from llmos.serve.errors import BadRequest
from llmos.serve.schemas import Sampling
from llmos.serve.settings import ServeSettings


def check_n(body: Sampling, settings: ServeSettings) -> int:
    n = 1 if body.n is None else body.n
    if n > settings.max_n:
        raise BadRequest(f"n={n} is above this server's limit of {settings.max_n}", param="n")
    return n


def check_max_tokens(value: int | None, param: str, settings: ServeSettings, allow_zero: bool) -> int | None:
    if value is None:
        return None
    if value > settings.max_tokens:
        raise BadRequest(f"{param}={value} is above this server's limit of {settings.max_tokens}", param=param)
    if value == 0 and not allow_zero:
        raise BadRequest(f"{param} must be at least 1", param=param)
    return value


def stop_strings(stop: str | list[str] | None, settings: ServeSettings) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > settings.max_stop:
        raise BadRequest(f"stop holds {len(stops)} strings; the limit is {settings.max_stop}", param="stop")
    if any(len(s) > settings.max_stop_length for s in stops):
        raise BadRequest(f"a stop string is longer than {settings.max_stop_length} characters", param="stop")
    return [s for s in stops if s]


def logit_bias(bias: dict[str, float] | None, vocab_size: int, settings: ServeSettings) -> dict[int, float]:
    if not bias:
        return {}
    if len(bias) > settings.max_logit_bias:
        raise BadRequest(f"logit_bias holds {len(bias)} entries; the limit is {settings.max_logit_bias}",
                         param="logit_bias")
    out = {}
    for key, value in bias.items():
        token = int(key) if key.strip().lstrip("-").isdigit() and len(key) < 20 else None
        if token is None or not 0 <= token < vocab_size:
            raise BadRequest(f"logit_bias key {key[:30]!r} is not a token id in [0, {vocab_size})",
                             param="logit_bias")
        if not -100 <= value <= 100:
            raise BadRequest(f"logit_bias value {value} for token {token} is outside [-100, 100]",
                             param="logit_bias")
        out[token] = float(value)
    return out


def sampling_kwargs(body: Sampling, vocab_size: int, settings: ServeSettings, max_tokens: int,
                    logprobs: int | None) -> dict[str, Any]:
    """Keyword arguments for `SamplingParams.from_generation_config` (None keeps the model's default)."""
    top_k = body.top_k if body.top_k is not None and body.top_k > 0 else None
    if body.top_p == 0:  # OpenAI accepts top_p=0: only the most likely token remains
        top_k, top_p = 1, None
    else:
        top_p = body.top_p
    if logprobs is not None and logprobs > settings.max_logprobs:
        raise BadRequest(f"logprobs={logprobs} is above this server's limit of {settings.max_logprobs}",
                         param="logprobs")
    return {"max_new_tokens": max_tokens, "temperature": body.temperature, "top_p": top_p, "top_k": top_k,
            "min_p": body.min_p, "repetition_penalty": body.repetition_penalty,
            "presence_penalty": body.presence_penalty, "frequency_penalty": body.frequency_penalty,
            "logit_bias": logit_bias(body.logit_bias, vocab_size, settings) or None,
            "stop": stop_strings(body.stop, settings) or None, "ignore_eos": body.ignore_eos,
            "logprobs": logprobs}


def choice_params(served: Any, kwargs: dict[str, Any], seed: int | None, index: int) -> Any:
    """SamplingParams for choice `index`: with a seed, each choice gets its own (seed + index)."""
    try:
        return served.sampling(**kwargs, seed=None if seed is None else (seed + index) % 2**63)
    except LlmosError as e:
        raise BadRequest(str(e)) from None
