"""Settings from environment variables, validated at start-up so a bad value stops the process at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_PREFIX = "RECSYS_"

# gRPC's own default for a message, and the suite's (RECSYS_MAX_MESSAGE_BYTES): servers, channels and the
# input limits (services/common/validation.py) are sized against it.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Events one RecordEvents call may carry (RECSYS_MAX_EVENTS_PER_REQUEST), the gateway's and the features
# service's alike, so a batch the gateway accepts is never refused behind it.
DEFAULT_MAX_EVENTS_PER_REQUEST = 1000


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid."""


class EnvReader:
    """Reads RECSYS_* variables and collects every problem before failing, so one run shows them all."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self.problems: list[str] = []

    def _raw(self, key: str) -> str | None:
        value = self._environ.get(ENV_PREFIX + key)
        return None if value is None or value.strip() == "" else value.strip()

    def string(self, key: str, default: str) -> str:
        raw = self._raw(key)
        return default if raw is None else raw

    def required(self, key: str) -> str:
        raw = self._raw(key)
        if raw is None:
            self.problems.append(f"{ENV_PREFIX}{key} is required")
            return ""
        return raw

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        raw = self._raw(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{ENV_PREFIX}{key}={raw!r} is not an integer")
            return default
        if not low <= value <= high:
            self.problems.append(f"{ENV_PREFIX}{key}={value} is outside {low}..{high}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        raw = self._raw(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{ENV_PREFIX}{key}={raw!r} is not a number")
            return default
        if not low <= value <= high:
            self.problems.append(f"{ENV_PREFIX}{key}={value} is outside {low}..{high}")
        return value

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in options:
            self.problems.append(f"{ENV_PREFIX}{key}={value!r} is not one of {', '.join(options)}")
        return value

    def directory(self, key: str, default: str | None = None) -> Path:
        raw = self._raw(key) or default
        if raw is None:
            self.problems.append(f"{ENV_PREFIX}{key} is required")
            return Path()
        path = Path(raw)
        if not path.is_dir():
            self.problems.append(f"{ENV_PREFIX}{key}={raw!r} is not a directory")
        return path

    def address(self, key: str) -> str:
        value = self.required(key)
        host, sep, port = value.rpartition(":")
        if value and (not sep or not host or not port.isdigit() or not 0 < int(port) < 65536):
            self.problems.append(f"{ENV_PREFIX}{key}={value!r} is not host:port")
        return value

    def finish(self) -> None:
        if self.problems:
            raise SettingsError("invalid settings: " + "; ".join(self.problems))


@dataclass(frozen=True)
class ServerSettings:
    """What every service's bootstrap needs."""

    host: str
    port: int
    artifacts: Path
    log_level: str
    max_message_bytes: int
    grace_seconds: float
    max_concurrent_rpcs: int
    # Prometheus /metrics on this port (0: a free one, logged); -1: none.
    metrics_port: int
    # How often the artefact root's `current` is checked for a new version to switch to; 0: never (the
    # version loaded at start is served until the process ends).
    reload_poll_s: float
    # When set, the bound port is written here once the server listens (the launcher reads it).
    port_file: Path | None
    # Server reflection (RECSYS_REFLECTION=0 leaves it out, as a public port in production should).
    reflection: bool = True
    # Connections are recycled after this long (0: never), so a client's round robin picks up pods added
    # since it connected; the grace lets calls on a recycled connection finish (streams run up to 600 s).
    max_connection_age_s: float = 300.0
    max_connection_age_grace_s: float = 660.0

    @classmethod
    def read(cls, env: EnvReader) -> ServerSettings:
        port_file = env.string("PORT_FILE", "")
        return cls(
            host=env.string("HOST", "127.0.0.1"),
            port=env.integer("PORT", 0, 0, 65535),
            artifacts=env.directory("ARTIFACTS"),
            log_level=env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            max_message_bytes=env.integer("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1024, 256 * 1024 * 1024),
            grace_seconds=env.number("GRACE_SECONDS", 5.0, 0.0, 300.0),
            max_concurrent_rpcs=env.integer("MAX_CONCURRENT_RPCS", 256, 1, 100_000),
            metrics_port=env.integer("METRICS_PORT", -1, -1, 65535),
            reload_poll_s=env.integer("RELOAD_POLL_MS", 1_000, 0, 3_600_000) / 1000,
            port_file=Path(port_file) if port_file else None,
            reflection=env.integer("REFLECTION", 1, 0, 1) == 1,
            max_connection_age_s=env.number("MAX_CONNECTION_AGE_S", 300.0, 0.0, 86_400.0),
            max_connection_age_grace_s=env.number("MAX_CONNECTION_AGE_GRACE_S", 660.0, 0.0, 86_400.0),
        )


def read_max_events_per_request(env: EnvReader) -> int:
    return env.integer("MAX_EVENTS_PER_REQUEST", DEFAULT_MAX_EVENTS_PER_REQUEST, 1, 1_000_000)
