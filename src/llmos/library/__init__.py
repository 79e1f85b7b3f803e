"""The model library: names, the store under $LLMOS_HOME, and pulling known models."""

from llmos.library.pull import catalog, pull
from llmos.library.store import DEFAULT_TAG, InvalidNameError, ModelName, home, list_models, resolve

__all__ = ["DEFAULT_TAG", "InvalidNameError", "ModelName", "catalog", "home", "list_models", "pull", "resolve"]
