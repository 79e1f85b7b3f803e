"""Generation: sampling, the decode loop and the `LLM` front end used by the CLI and pipelines."""

from llmos.engine.generate import TextStream, generate_tokens
from llmos.engine.llm import LLM, load
from llmos.engine.sampling import SamplingParams, sample

__all__ = ["LLM", "SamplingParams", "TextStream", "generate_tokens", "load", "sample"]
