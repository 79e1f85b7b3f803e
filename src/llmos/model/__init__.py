"""The one config-driven decoder Transformer shared by training, evaluation and generation."""

from llmos.model.config import PRESETS, Config
from llmos.model.transformer import ContextLengthError, KVCache, Transformer

__all__ = ["PRESETS", "Config", "ContextLengthError", "KVCache", "Transformer"]
