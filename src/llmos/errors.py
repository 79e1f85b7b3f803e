"""The error types users see. The CLI prints any `LlmosError` as one line and exits non-zero."""


class LlmosError(Exception):
    """A problem the user can act on; the message names the file, field or limit."""


class NotFoundError(LlmosError):
    """A model name, file or run that does not exist."""


class ModelFormatError(LlmosError):
    """A model file or folder that is corrupt, truncated or not what it claims to be."""


class ConfigError(LlmosError):
    """A config value or field that is missing, unknown or out of range."""
