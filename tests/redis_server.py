"""A redis-server of a test's own, for tests that stop, pause or configure it (the shared one in conftest
serves every other test and must stay up)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1; `stop` ends it (a store outage), and `url` stays valid."""

    def __init__(self, directory: Path, *options: str, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("RECSYS_REQUIRE_REDIS") == "1":  # as in conftest: CI fails rather than skips
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        # With TLS the plain port is closed and the TLS one takes the port.
        ports = ["--port", "0", "--tls-port", str(self.port)] if tls else ["--port", str(self.port)]
        log = directory / f"redis-{self.port}.log"
        command = [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)]
        self.process = subprocess.Popen([*command, "--logfile", str(log), *options], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start: {log.read_text()[-2000:] if log.exists() else ''}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def url(self, scheme: str = "redis", credentials: str = "") -> str:
        user_info = f"{credentials}@" if credentials else ""
        return f"{scheme}://{user_info}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def redis_server(directory: Path, *options: str, tls: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory, *options, tls=tls)
    try:
        yield server
    finally:
        server.stop()
