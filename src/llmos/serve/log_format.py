"""Server logging where one record is always one line.

Request paths, model names and (with --log-prompts) prompts come from clients; a CR/LF in them
would forge log records and an ANSI escape would rewrite the operator's terminal. The formatter
escapes every control character after formatting, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        ch = match.group()
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or f"\\x{ord(ch):02x}" if ord(ch) < 256 \
            else f"\\u{ord(ch):04x}"

    return _CONTROL.sub(one, text)


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("llmos", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
