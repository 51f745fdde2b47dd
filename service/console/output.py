"""What the client commands print: the service's objects as JSON, and failures as one line on
stderr with an exit status a script can act on."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from service.cli import UNAVAILABLE, fail
from service.client import (
    ConnectionFailed,
    ProblemError,
    RateLimited,
    ServerError,
)
from service.domain.wire import timestamp

REFUSED = 1
INTERRUPTED = 130
BROKEN_PIPE = 141
"""128 + SIGPIPE, as for a command the shell saw killed by it (``export | head``)."""


def to_json(model: BaseModel) -> str:
    """One line of JSON with the service's own spelling of times (always microseconds, ``Z``),
    which pydantic's serialiser does not keep."""
    return json.dumps(model.model_dump(), default=_time, ensure_ascii=False, separators=(",", ":"))


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return timestamp(value.astimezone(UTC))
    raise TypeError(f"{type(value).__name__} is not JSON")


def describe(error: ProblemError) -> str:
    """The problem's status, code and detail, and each field a validation error names (those
    the detail does not already mention)."""
    named = (f"{item.get('field')}: {item.get('message')}" for item in error.errors)
    return "; ".join([str(error), *(field for field in named if field not in str(error))])


def reported(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a client command; a failure of the service becomes one line and an exit status."""
    try:
        return command(args)
    except ConnectionFailed as error:
        return fail(f"cannot reach the service: {error}", UNAVAILABLE)
    except (ServerError, RateLimited) as error:
        return fail(f"the service is unavailable: {describe(error)}", UNAVAILABLE)
    except ProblemError as error:
        return fail(describe(error), REFUSED)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away: say nothing more, and keep Python's exit-time flush of stdout
        # from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
