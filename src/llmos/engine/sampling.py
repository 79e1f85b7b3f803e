"""Per-request sampling settings and the function that turns logits into the next token."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from llmos.errors import ConfigError


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0 means off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # divides the logits of every token seen (prompt and output)
    presence_penalty: float = 0.0  # OpenAI-style: subtracted once from tokens already generated
    frequency_penalty: float = 0.0  # OpenAI-style: subtracted per occurrence in the output
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # also report the top-N alternatives' log-probabilities
    # Constrained decoding hooks: each gets (output ids so far, logits) and returns new logits.
    logits_processors: list[Callable[[list[int], torch.Tensor], torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        checks = [("max_new_tokens", self.max_new_tokens >= 0),
                  ("temperature", math.isfinite(self.temperature) and self.temperature >= 0),
                  ("top_k", self.top_k >= 0), ("top_p", 0 < self.top_p <= 1), ("min_p", 0 <= self.min_p <= 1),
                  ("repetition_penalty", math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0),
                  ("presence_penalty", -2 <= self.presence_penalty <= 2),
                  ("frequency_penalty", -2 <= self.frequency_penalty <= 2),
                  ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20)]
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"sampling setting {name}={getattr(self, name)!r} is out of range")
        if any(not -100 <= b <= 100 for b in self.logit_bias.values()):
            raise ConfigError("sampling setting logit_bias values must lie in [-100, 100]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def plain(self) -> bool:
        """No logit processing at all: plain argmax or plain temperature sampling."""
        return (self.repetition_penalty == 1.0 and not self.presence_penalty and not self.frequency_penalty
                and not self.logit_bias and not self.logits_processors)

    @classmethod
    def from_generation_config(cls, gen: dict[str, Any], **overrides: Any) -> SamplingParams:
        """Defaults from a generation_config.json, then explicit settings (None means 'default')."""
        values: dict[str, Any] = {}
        if gen.get("do_sample"):
            for key in ("temperature", "top_k", "top_p", "min_p"):
                if gen.get(key) is not None:
                    values[key] = gen[key]
        elif "do_sample" in gen:
            values["temperature"] = 0.0
        if gen.get("repetition_penalty") is not None:
            values["repetition_penalty"] = gen["repetition_penalty"]
        if gen.get("max_new_tokens") is not None:
            values["max_new_tokens"] = gen["max_new_tokens"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown sampling setting(s): {', '.join(unknown)}")
        return cls(**values)


def process_logits(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None,
                   output: torch.Tensor | None = None) -> torch.Tensor:
    """Apply penalties and logit bias to one position's fp32 logits [vocab]."""
    if params.plain:
        return logits
    logits = logits.clone()
    if params.repetition_penalty != 1.0 and seen is not None and seen.numel():
        ids = seen.unique()
        old = logits[ids]
        logits[ids] = torch.where(old > 0, old / params.repetition_penalty, old * params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and output is not None and output.numel():
        ids, counts = output.unique(return_counts=True)
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts.to(logits.dtype)
    for token, bias in params.logit_bias.items():
        if 0 <= token < logits.numel():
            logits[token] += bias
    for processor in params.logits_processors:
        logits = processor(output.tolist() if output is not None else [], logits)
    return logits


def choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> int:
    """The next token from processed logits [vocab]: argmax, or a draw after temperature,
    top-k, min-p and top-p filtering."""
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.min_p > 0:
        probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
        drop = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def sample(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None,
           generator: torch.Generator | None = None, output: torch.Tensor | None = None) -> int:
    return choose(process_logits(logits.float(), params, seen, output), params, generator)
