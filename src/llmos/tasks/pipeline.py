"""`pipeline(task, model=NAME)`: one call from a task name to results, like `transformers.pipeline`."""

from __future__ import annotations

import os
from typing import Any

from llmos.engine import LLM
from llmos.errors import ConfigError


class TextGenerationPipeline:
    """Continue text: `pipe("Once upon", max_new_tokens=20)[0]["generated_text"]`."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def __call__(self, inputs: str | list[str], return_full_text: bool = True,
                 **settings: Any) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        def one(prompt: str) -> list[dict[str, str]]:
            text = self.llm.generate(prompt, **settings)
            return [{"generated_text": prompt + text if return_full_text else text}]

        if isinstance(inputs, str):
            return one(inputs)
        return [one(p) for p in inputs]


TASKS = {"text-generation": TextGenerationPipeline}


def pipeline(task: str, model: str | os.PathLike | LLM, **load_kwargs: Any) -> TextGenerationPipeline:
    if task not in TASKS:
        raise ConfigError(f"unknown pipeline task {task!r}; available: {', '.join(sorted(TASKS))}")
    llm = model if isinstance(model, LLM) else LLM.load(model, **load_kwargs)
    return TASKS[task](llm)
