"""Runs the suite: one process per service, started in dependency order, stopped without leftovers.

Every hop between the suite's own processes is mTLS: a certificate authority made fresh at each start signs
one certificate per process (services, tritonserver, and the launcher's own health checks). The gateway's
public port is plaintext unless `public_tls` asks for TLS with API keys.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys_runtime.artifacts import MANIFEST, ArtifactError, open_verified_version
from recsys_runtime.triton_contract import SERVING_REPOSITORY_DIR, served_model_name
from recsys_runtime.triton_links import link_served_versions
from services.common.tls import TLSFiles, channel_credentials
from services.launcher.certificates import LocalAuthority
from services.launcher.environment import service_environment
from services.launcher.triton import TritonServer

BACKENDS = ("features", "candidates", "ranking", "synthetic")
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
GATEWAY = "gateway"
_PR_SET_PDEATHSIG = 1


class LaunchError(RuntimeError):
    """A service did not come up; the message carries the tail of its log."""


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the launcher dies, so no service outlives it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def artifact_root(path: Path) -> Path:
    """The directory that holds versions (and the suite's state), given a root or one version."""
    return path.parent if (path / MANIFEST).is_file() else path


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    port_file: Path
    env: dict[str, str]
    port: int = 0
    restarts: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PublicTLS:
    """The gateway's public port over TLS (a certificate from the suite's CA) with API-key tokens."""

    # Lines as `python -m services.common.auth new-key` prints them; None: the suite makes one admin key.
    api_keys: Path | None = None


@dataclass
class Suite:
    artifacts: Path
    host: str = "127.0.0.1"
    port: int = 50051
    state_dir: Path | None = None
    log_dir: Path | None = None
    start_timeout_s: float = 120.0
    grace_s: float = 5.0
    extra_env: dict[str, str] = field(default_factory=dict)
    triton_config: str | None = None
    public_tls: PublicTLS | None = None
    children: dict[str, Child] = field(default_factory=dict)
    gateway_port: int = 0
    triton: TritonServer | None = None
    _triton_restarts: list[float] = field(default_factory=list)
    _run_dir: Path | None = None
    authority: LocalAuthority | None = None
    # The launcher's own certificate: its health checks, and tests or benches calling a stage directly.
    client_tls: TLSFiles | None = None
    # The key made for a public TLS port when none was given (shown to the operator once, never logged).
    generated_api_key: str | None = None

    @property
    def gateway_address(self) -> str:
        return f"{self.host}:{self.gateway_port}"

    @property
    def ca_file(self) -> Path:
        """The CA every certificate of this run chains to: what a TLS client of the gateway trusts."""
        assert self.authority is not None, "the suite is not started"
        return self.authority.ca_file

    def client_credentials(self) -> grpc.ChannelCredentials:
        """mTLS credentials accepted by every stage of this run."""
        assert self.client_tls is not None, "the suite is not started"
        return channel_credentials(self.client_tls.load())

    def _hosts(self) -> list[str]:
        # The address the stages dial each other on (the bind address), and loopback.
        return sorted({self.host, "127.0.0.1", "localhost"})

    def _issue(self, name: str) -> TLSFiles:
        assert self.authority is not None
        return self.authority.issue(name, self._hosts())

    def _security_env(self, name: str) -> dict[str, str]:
        """The child's certificate (mTLS to and from the other stages) and, for the gateway, its public port."""
        files = self._issue(name)
        env = {"RECSYS_TLS_DIR": str(files.cert.parent)}
        if name != GATEWAY:
            return env
        if self.public_tls is None:
            return {**env, "RECSYS_TLS_SERVER": "off"}
        return {
            **env,
            "RECSYS_TLS_SERVER": "tls",
            "RECSYS_AUTH": "api-keys",
            "RECSYS_AUTH_API_KEYS": str(self._api_keys_file(self.public_tls)),
        }

    def _api_keys_file(self, public: PublicTLS) -> Path:
        if public.api_keys is not None:
            return public.api_keys.resolve()
        from services.common.auth import new_api_key

        assert self._run_dir is not None
        key, line = new_api_key("local-admin", ["admin"])
        path = self._run_dir / "api-keys"
        path.write_text(line + "\n")
        self.generated_api_key = key
        return path

    def _spawn(self, name: str, env: dict[str, str]) -> Child:
        assert self._run_dir is not None
        # Each child serves Prometheus /metrics on its own port, and its certificate, kept across restarts
        # (env is kept).
        if "RECSYS_TLS_DIR" not in env:
            env = {**self._security_env(name), **env}
        env = {"RECSYS_METRICS_PORT": str(free_port(self.host)), **env}
        log_dir = self.log_dir or artifact_root(self.artifacts) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        port_file = self._run_dir / f"{name}.port"
        child_env = {
            **service_environment(os.environ),
            **self.extra_env,
            "RECSYS_ARTIFACTS": str(self.artifacts),
            "RECSYS_HOST": self.host,
            "RECSYS_PORT_FILE": str(port_file),
            "RECSYS_STATE_DIR": str(self.state_dir or artifact_root(self.artifacts) / "state"),
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            preexec_fn=_die_with_parent,
        )
        child = Child(name, process, log_path, log_file, port_file, env)
        self.children[name] = child
        return child

    def _failure(self, child: Child, what: str) -> LaunchError:
        child.log_file.flush()
        tail = child.log_path.read_bytes()[-3000:].decode(errors="replace")
        return LaunchError(f"{child.name} {what}; last log lines ({child.log_path}):\n{tail}")

    def _wait_for_port(self, child: Child, deadline: float) -> int:
        while time.monotonic() < deadline:
            if child.port_file.exists():
                return int(child.port_file.read_text())
            if child.process.poll() is not None:
                raise self._failure(child, f"exited with code {child.process.returncode} before listening")
            time.sleep(0.05)
        raise self._failure(child, "did not start listening in time")

    def _health_channel(self, name: str, port: int) -> grpc.Channel:
        target = f"{self.host}:{port}"
        if name == GATEWAY and self.public_tls is None:
            return grpc.insecure_channel(target)
        if name == GATEWAY:  # TLS without a client certificate, as the gateway's public callers connect
            assert self.authority is not None
            return grpc.secure_channel(target, grpc.ssl_channel_credentials(self.ca_file.read_bytes()))
        return grpc.secure_channel(target, self.client_credentials())

    def _wait_for_health(self, child: Child, port: int, deadline: float) -> None:
        with self._health_channel(child.name, port) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if child.process.poll() is not None:
                    raise self._failure(child, f"exited with code {child.process.returncode} while loading")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise self._failure(child, "did not become SERVING in time")

    def _served_model(self) -> str:
        """Triton's name for the ranker of the version the services serve now: `current`'s, or the one they fall
        back to when `current` does not verify."""
        try:
            return served_model_name(open_verified_version(self.artifacts).path.name)
        except ArtifactError as error:
            raise LaunchError(str(error)) from None

    def _start_triton(self) -> None:
        root = artifact_root(self.artifacts)
        link_served_versions(root)  # roots written before the serving repository existed
        log_dir = self.log_dir or root / "logs"
        self.triton = TritonServer(
            root / SERVING_REPOSITORY_DIR,
            free_port(self.host),
            log_dir / "triton.log",
            self.triton_config,
            models=[self._served_model()],
            tls=self._issue("triton"),
        )
        self.triton.start(preexec_fn=_die_with_parent)

    @property
    def metrics_addresses(self) -> dict[str, str]:
        return {
            name: f"http://{self.host}:{child.env['RECSYS_METRICS_PORT']}/metrics"
            for name, child in self.children.items()
        }

    def restart_triton(self) -> bool:
        """Start tritonserver again on its old port (the ranking service keeps its address)."""
        assert self.triton is not None
        now = time.monotonic()
        self._triton_restarts = [t for t in self._triton_restarts if now - t < RESTART_WINDOW_S]
        if len(self._triton_restarts) >= MAX_RESTARTS:
            return False
        self._triton_restarts.append(now)
        self.triton.stop()
        # The version current now: the suite may have switched since Triton first started.
        self.triton.models = [self._served_model()]
        self.triton.start(preexec_fn=_die_with_parent)
        return True

    def start(self) -> str:
        """Start tritonserver and every service; return the gateway's address once all report SERVING."""
        self._run_dir = Path(tempfile.mkdtemp(prefix="recsys-run-"))
        deadline = time.monotonic() + self.start_timeout_s
        try:
            self.authority = LocalAuthority.create(self._run_dir / "tls")
            self.client_tls = self._issue("launcher")
            self._start_triton()
            assert self.triton is not None
            ports = {}
            for name in BACKENDS:
                extra = {"RECSYS_TRITON_ADDR": self.triton.address} if name == "ranking" else {}
                self._spawn(name, {"RECSYS_PORT": "0", **extra})
            for name in BACKENDS:
                ports[name] = self.children[name].port = self._wait_for_port(self.children[name], deadline)
            addresses = {f"RECSYS_{n.upper()}_ADDR": f"{self.host}:{p}" for n, p in ports.items()}
            gateway = self._spawn(GATEWAY, {"RECSYS_PORT": str(self.port), **addresses})
            self.gateway_port = gateway.port = self._wait_for_port(gateway, deadline)
            self.triton.wait_ready(self.triton.models, max(1.0, deadline - time.monotonic()), self.client_tls)
            for name in BACKENDS:
                self._wait_for_health(self.children[name], ports[name], deadline)
            self._wait_for_health(gateway, self.gateway_port, deadline)
        except BaseException:
            self.stop()
            raise
        return self.gateway_address

    def exited(self) -> list[tuple[str, int]]:
        """Children that have exited, with their return codes."""
        return [(c.name, c.process.returncode) for c in self.children.values() if c.process.poll() is not None]

    def restart(self, name: str) -> bool:
        """Start a crashed child again on its old port (its callers keep their address).

        False when it crashed MAX_RESTARTS times within RESTART_WINDOW_S: then it is not worth retrying.
        """
        old = self.children[name]
        now = time.monotonic()
        recent = [t for t in old.restarts if now - t < RESTART_WINDOW_S]
        if len(recent) >= MAX_RESTARTS:
            return False
        old.log_file.close()
        old.port_file.unlink(missing_ok=True)
        child = self._spawn(name, {**old.env, "RECSYS_PORT": str(old.port)})
        child.port, child.restarts = old.port, [*recent, now]
        return True

    def stop(self) -> None:
        """SIGTERM the gateway first (it drains), then the rest; SIGKILL whatever outlives the grace period."""
        order = [c for c in (self.children.get(GATEWAY),) if c is not None]
        order += [self.children[n] for n in BACKENDS if n in self.children]
        for group in (order[:1], order[1:]):
            for child in group:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s + 2.0
            for child in group:
                try:
                    child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        for child in order:
            child.log_file.close()
        self.children.clear()
        if self.triton is not None:  # after the ranking service, its only caller
            self.triton.stop()
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None


def wait_for_signal(suite: Suite) -> int:
    """Serve until SIGTERM/SIGINT (exit 0), restarting crashed children; exit 1 when one keeps crashing.

    Stops the suite either way.
    """
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not received:
            if (
                suite.triton is not None
                and suite.triton.process is not None
                and suite.triton.process.poll() is not None
            ):
                print(
                    f"tritonserver exited with code {suite.triton.process.returncode}; restarting it", file=sys.stderr
                )
                if not suite.restart_triton():
                    print(
                        f"stopping: tritonserver crashed {MAX_RESTARTS} times in {RESTART_WINDOW_S:.0f}s",
                        file=sys.stderr,
                    )
                    return 1
            for name, code in suite.exited():
                print(f"{name} exited with code {code}; restarting it", file=sys.stderr, flush=True)
                if not suite.restart(name):
                    print(f"stopping: {name} crashed {MAX_RESTARTS} times in {RESTART_WINDOW_S:.0f}s", file=sys.stderr)
                    return 1
            with contextlib.suppress(InterruptedError):
                time.sleep(0.2)
        return 0
    finally:
        suite.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
