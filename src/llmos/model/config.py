"""The one model config: plain values that describe every decoder family llmos runs.

A GPT-2 style model and a Llama style model differ only in a handful of switches (norm, MLP,
position encoding, biases), so one dataclass with those switches drives one Transformer class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from llmos.errors import ConfigError

ROPE_SCALING_TYPES = ("linear", "llama3")


@dataclass
class Config:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    n_kv_head: int | None = None  # grouped-query attention; None means n_kv_head == n_head
    head_dim: int | None = None  # None means n_embd // n_head
    intermediate_size: int | None = None  # None means 4 * n_embd
    block_size: int = 2048  # the longest sequence the model may see (max_position_embeddings)
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    position: Literal["rope", "learned"] = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"type": "linear"|"llama3", "factor": ..., ...}
    bias: bool = False  # biases on every linear and norm (GPT-2)
    qkv_bias: bool = False  # biases on the q/k/v projections only (Qwen2)
    tie_embeddings: bool = True
    sliding_window: int | None = None  # Mistral-style local attention
    dropout: float = 0.0
    # The Hugging Face family this config exports to ("gpt2", "llama", "qwen2", "mistral").
    hf_model_type: str = "llama"
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # passthrough (e.g. id2label) kept for export

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.head_dim is None:
            if self.n_embd % self.n_head:
                raise ConfigError(f"n_embd ({self.n_embd}) is not divisible by n_head ({self.n_head})")
            self.head_dim = self.n_embd // self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd
        for name in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "n_kv_head"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"config field {name} must be positive, got {getattr(self, name)}")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"n_head ({self.n_head}) is not a multiple of n_kv_head ({self.n_kv_head})")
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ConfigError(f"config field norm must be rmsnorm or layernorm, got {self.norm!r}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ConfigError(f"config field mlp must be swiglu or gelu, got {self.mlp!r}")
        if self.position not in ("rope", "learned"):
            raise ConfigError(f"config field position must be rope or learned, got {self.position!r}")
        if self.rope_scaling is not None and self.rope_scaling.get("type") not in ROPE_SCALING_TYPES:
            raise ConfigError(
                f"config field rope_scaling.type {self.rope_scaling.get('type')!r} is not supported "
                f"(supported: {', '.join(ROPE_SCALING_TYPES)})"
            )

    @property
    def qkv_size(self) -> int:
        return (self.n_head + 2 * self.n_kv_head) * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Config:
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        return cls.from_dict({**PRESETS[name], "name": name, **overrides})


_GPT2 = dict(norm="layernorm", mlp="gelu", position="learned", bias=True, hf_model_type="gpt2", block_size=1024)
_SMOLLM2 = dict(vocab_size=49152, block_size=8192, rope_theta=100000.0, norm_eps=1e-5)

# Named sizes, from test-sized toys to the published models (values from their config.json files).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-gpt2": dict(_GPT2, n_layer=2, n_head=4, n_embd=64, vocab_size=512, block_size=128),
    "tiny-llama": dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, intermediate_size=128, vocab_size=512,
                       block_size=256),
    "baby-gpt": dict(_GPT2, n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=64, bias=False),
    "gpt2": dict(_GPT2, n_layer=12, n_head=12, n_embd=768, vocab_size=50257),
    "gpt2-medium": dict(_GPT2, n_layer=24, n_head=16, n_embd=1024, vocab_size=50257),
    "gpt2-large": dict(_GPT2, n_layer=36, n_head=20, n_embd=1280, vocab_size=50257),
    "gpt2-xl": dict(_GPT2, n_layer=48, n_head=25, n_embd=1600, vocab_size=50257),
    "smollm2-135m": dict(_SMOLLM2, n_layer=30, n_head=9, n_kv_head=3, n_embd=576, intermediate_size=1536),
    "smollm2-360m": dict(_SMOLLM2, n_layer=32, n_head=15, n_kv_head=5, n_embd=960, intermediate_size=2560),
    "smollm2-1.7b": dict(_SMOLLM2, n_layer=24, n_head=32, n_kv_head=32, n_embd=2048, intermediate_size=8192,
                         rope_theta=130000.0),
    "tinyllama-1.1b": dict(n_layer=22, n_head=32, n_kv_head=4, n_embd=2048, intermediate_size=5632,
                           vocab_size=32000, block_size=2048, tie_embeddings=False),
    "qwen2.5-0.5b": dict(n_layer=24, n_head=14, n_kv_head=2, n_embd=896, intermediate_size=4864,
                         vocab_size=151936, block_size=32768, rope_theta=1000000.0, norm_eps=1e-6,
                         qkv_bias=True, hf_model_type="qwen2"),
    "llama-3.2-1b": dict(n_layer=16, n_head=32, n_kv_head=8, n_embd=2048, intermediate_size=8192,
                         vocab_size=128256, block_size=131072, rope_theta=500000.0,
                         rope_scaling={"type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}
