"""Logs as one JSON object per line, for machines; or plain text, for a person at a terminal.

Every process configures logging the same way: ``taskstream serve`` hands this configuration
to uvicorn, which applies it in each worker it spawns. Extra fields given to a log call
(``log.info("...", extra={...})``) become members of the JSON object.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import msgspec

LogFormat = Literal["auto", "json", "text"]

# What every LogRecord carries; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's copy of the message with terminal colours
}
_encode = msgspec.json.Encoder(enc_hook=str).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((record.created - seconds) * 1_000_000):06d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def resolve(log_format: LogFormat) -> Literal["json", "text"]:
    """``auto``: text when a person is watching (stderr is a terminal), JSON otherwise."""
    if log_format == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return log_format


def config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the service and uvicorn's own loggers."""
    formatter = (
        {"()": f"{__name__}.JsonFormatter"}
        if resolve(log_format) == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's loggers propagate to the root handler; its access log is replaced by
            # the service's own request log (api/requestlog.py).
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }
