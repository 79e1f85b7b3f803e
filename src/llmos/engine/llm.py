"""`llmos.load(NAME)`: a model ready to generate, stream and chat."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint import Pretrained, load_gguf, load_pretrained
from llmos.engine.engine import Engine, start_engine
from llmos.engine.sampling import SamplingParams
from llmos.errors import ConfigError, LlmosError
from llmos.library import resolve


class LLM:
    def __init__(self, pretrained: Pretrained, name: str = "", max_batch: int = 8,
                 threads: int | None = None, engine: Engine | None = None) -> None:
        if pretrained.tokenizer is None:
            raise ConfigError(f"model {name or pretrained.path} has no tokenizer")
        self.pretrained = pretrained
        self.model = pretrained.model
        self.tokenizer = pretrained.tokenizer
        self.name = name or str(pretrained.path)
        self.stats: dict[str, float] = {}
        self.engine = engine or Engine(self.model, self.tokenizer, max_batch=max_batch, threads=threads)

    @classmethod
    def load(cls, name: str | os.PathLike, dtype: torch.dtype = torch.float32, threads: int | None = None,
             quantize: str | None = None, max_batch: int = 8) -> LLM:
        """Load a library model (or a model folder / .gguf path), optionally with int8/int4 weights.

        From a GGUF file, Q8_0/Q4_0/Q4_1 blocks go straight into the quantized layers, so the
        file's own quantization is kept rather than re-quantized. Loading runs on the thread
        that then runs the engine (see `start_engine`)."""
        path = Path(resolve(name))
        built: dict[str, Pretrained] = {}

        def build() -> Engine:
            if threads:
                torch.set_num_threads(threads)
            pretrained = load_gguf(path) if path.is_file() else load_pretrained(path, dtype=dtype)
            if quantize not in (None, "none"):
                from llmos.engine.quant import quantize_model, read_gguf_blocks

                raw = read_gguf_blocks(path, pretrained.model.config) if path.is_file() else None
                quantize_model(pretrained.model, quantize, gguf_raw=raw)
            if pretrained.tokenizer is None:
                raise ConfigError(f"model {name} has no tokenizer")
            built["pretrained"] = pretrained
            return Engine(pretrained.model, pretrained.tokenizer, max_batch=max_batch, threads=threads)

        engine = start_engine(build)
        return cls(built["pretrained"], str(name), engine=engine)

    def sampling(self, **settings: Any) -> SamplingParams:
        return SamplingParams.from_generation_config(self.pretrained.generation_config, **settings)

    def stream_ids(self, prompt_ids: list[int], **settings: Any) -> Iterator[str]:
        """Text deltas for a prompt given as token ids; closing the iterator cancels the request."""
        request = self.engine.submit(prompt_ids, self.sampling(**settings))
        try:
            for event in request:
                if event.error:
                    raise LlmosError(event.error)
                if event.text:
                    yield event.text
        finally:
            request.cancel()
            self.stats = {"prompt_tokens": len(prompt_ids), "completion_tokens": len(request.output_ids),
                          "finish_reason": request.finish_reason}

    def stream(self, prompt: str, **settings: Any) -> Iterator[str]:
        """Text deltas of the continuation of `prompt`."""
        return self.stream_ids(self.tokenizer.encode(prompt), **settings)

    def generate(self, prompt: str, **settings: Any) -> str:
        return "".join(self.stream(prompt, **settings))

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)

    def chat(self, messages: list[dict[str, Any]], stream: bool = False, **settings: Any) -> str | Iterator[str]:
        """The assistant's reply to a conversation, rendered with the model's chat template."""
        deltas = self.stream_ids(self.chat_prompt(messages), **settings)
        return deltas if stream else "".join(deltas)


def load(name: str | os.PathLike, **kwargs: Any) -> LLM:
    return LLM.load(name, **kwargs)
