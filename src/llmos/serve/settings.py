"""Everything `llmos serve` can be told: the models, the address, the key and the limits.

The limits exist so that no single request (huge n, max_tokens, stop lists, bodies) and no crowd
of requests can take the server down; each is a flag with a default that suits a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeSettings:
    # Models: "name[:tag]" from the library, or "alias=name-or-path". Empty: the whole library.
    models: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    memory_budget_gb: float = 8.0  # models loaded at once (weights + KV cache), LRU-evicted above it
    threads: int | None = None  # torch threads of each engine
    context_length: int = 4096  # per-model cap on prompt + output tokens (the model's own is the ceiling)
    max_concurrency: int = 16  # sequences decoded together per model (the engine batch)
    max_queue: int = 64  # requests waiting beyond the running ones; above it: 429
    max_tokens: int = 4096  # largest max_tokens a request may ask for
    default_max_tokens: int = 1024  # chat requests without max_tokens (completions default to 16, as OpenAI)
    max_n: int = 8
    max_prompts: int = 64  # prompts in one completions / embeddings request
    max_stop: int = 16
    max_stop_length: int = 256
    max_logit_bias: int = 1024
    max_logprobs: int = 20
    max_body_bytes: int = 2 * 1024 * 1024
    request_timeout: float = 600.0  # seconds for one whole request
    header_timeout: float = 10.0  # seconds a connection may take to send its request head
    body_timeout: float = 30.0  # seconds a client may take to send its body
    log_prompts: bool = False  # log (escaped, cut) prompts: off by default, prompts are private
    preload: bool = True  # load the first model before listening, so the first request is fast

    @property
    def max_in_flight(self) -> int:
        return self.max_concurrency + self.max_queue
