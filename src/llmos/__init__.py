"""llmos: LLM as an OS."""
