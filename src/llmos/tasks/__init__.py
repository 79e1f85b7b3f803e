"""Task pipelines in the style of `transformers.pipeline`, running on llmos models."""

from llmos.tasks.pipeline import TextGenerationPipeline, pipeline

__all__ = ["TextGenerationPipeline", "pipeline"]
