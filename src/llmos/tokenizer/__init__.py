"""Tokenizers for llmos: load from a Hugging Face folder or GGUF metadata, train BPE or char-level,
encode/decode, and render chat prompts. See `Tokenizer`."""

from llmos.tokenizer.chat_template import ChatTemplateError
from llmos.tokenizer.tokenizer import TokenizeError, Tokenizer, train_bpe, train_char

__all__ = ["ChatTemplateError", "TokenizeError", "Tokenizer", "train_bpe", "train_char"]
