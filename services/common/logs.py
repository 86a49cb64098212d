"""JSON logs, one object per line, on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from services.common.tracing import current_ids

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Inside a request: its trace, so a log line leads to the request's spans and the other hops' lines.
        entry.update(current_ids())
        # Anything passed with extra={...} becomes a field of its own.
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Throttled:
    """A warning that can repeat on every request (a store down): the first is logged at once, then at most
    one per `interval_s`, carrying how many were held back since, so an outage does not flood the logs."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last = -float("inf")
        self._held_back = 0

    def warning(self, message: str, **fields: Any) -> None:
        now = self._clock()
        if now - self._last < self.interval_s:
            self._held_back += 1
            return
        self.logger.warning(message, extra={**fields, "repeats_held_back": self._held_back})
        self._last, self._held_back = now, 0
