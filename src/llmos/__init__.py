"""llmos: LLM as an OS — pretrain, import, fine-tune, evaluate, serve and share open models."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["LLM", "__version__", "load", "pipeline"]


def __getattr__(name: str) -> Any:
    # Lazy so that `llmos --help` and light commands do not pay for importing torch.
    if name in ("LLM", "load"):
        from llmos import engine

        return getattr(engine, name)
    if name == "pipeline":
        from llmos.tasks import pipeline

        return pipeline
    raise AttributeError(f"module 'llmos' has no attribute {name!r}")
