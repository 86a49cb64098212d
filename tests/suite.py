"""Helpers for tests that run the real suite: `recsys serve` as a subprocess, children found in /proc."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

RECSYS = [sys.executable, "-m", "services.launcher"]


def recsys(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RECSYS, *args], capture_output=True, text=True, timeout=timeout)


def children_of(pid: int) -> dict[int, str]:
    """Live child processes of pid: {pid: command line}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Served:
    process: subprocess.Popen[str]
    address: str
    # With --tls: the CA of the gateway's certificate and the API key the suite made (printed once).
    ca: Path | None = None
    api_key: str | None = None

    def service_pid(self, name: str) -> int:
        """A child's pid: a service by name, or "tritonserver"."""
        marker = "bin/tritonserver" if name == "tritonserver" else f"services.{name}"
        for pid, command in children_of(self.process.pid).items():
            if marker in command:
                return pid
        raise LookupError(f"no {name} child")

    def setting(self, name: str, service: str = "gateway") -> str:
        """One of a service process's RECSYS_ settings, as the launcher set it."""
        environ = Path(f"/proc/{self.service_pid(service)}/environ").read_bytes().split(b"\0")
        key = f"RECSYS_{name.upper()}=".encode()
        return next(e.split(b"=", 1)[1].decode() for e in environ if e.startswith(key))

    def stage_channel(self, service: str) -> grpc.Channel:
        """A channel to one stage, as the gateway opens it: mTLS with the gateway's certificate (the suite's
        own hops accept nothing less)."""
        from services.common.tls import TLSFiles, channel_credentials

        files = TLSFiles.in_directory(Path(self.setting("tls_dir")))
        return grpc.secure_channel(self.setting(f"{service}_addr"), channel_credentials(files.load()))

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def serve(
    artifacts: Path,
    timeout: float = 120,
    otel: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
    **env: str,
) -> Served:
    """`recsys serve --port 0 [options]` (env: extra RECSYS_ settings, otel: OpenTelemetry's); returns once it
    prints the gateway address."""
    process = subprocess.Popen(
        [*RECSYS, "serve", "--artifacts", str(artifacts), "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "RECSYS_LOG_LEVEL": "INFO",
            **{f"RECSYS_{k.upper()}": v for k, v in env.items()},
            **(otel or {}),
        },
    )
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    printed: dict[str, str] = {}
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(("ca ", "api-key ")):
            name, value = line.split()
            printed[name] = value
        if line.startswith("gateway "):
            ca = Path(printed["ca"]) if "ca" in printed else None
            return Served(process, line.split()[1], ca, printed.get("api-key"))
        if not line and process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"recsys serve exited with {process.returncode}: {stderr[-3000:]}")
    process.kill()
    raise TimeoutError("recsys serve did not print the gateway address")


@contextlib.contextmanager
def service_process(name: str, artifacts: Path, run_dir: Path, **env: str) -> Iterator[str]:
    """One service as its own process (`python -m services.<name>`); yields its address once SERVING."""
    port_file = run_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    child_env = {
        **os.environ,
        "RECSYS_ARTIFACTS": str(artifacts),
        "RECSYS_PORT": "0",
        "RECSYS_PORT_FILE": str(port_file),
        **{f"RECSYS_{key.upper()}": value for key, value in env.items()},
    }
    log = (run_dir / f"{name}.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=child_env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {(run_dir / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text()}"
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while (
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status != health_pb2.HealthCheckResponse.SERVING
            ):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} never became SERVING")
                time.sleep(0.05)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def clone_version(root: Path, version: str) -> str:
    """A new version under `root` with the files of `version` (the models of a retrain, without its minutes),
    published the trainer's way: complete and linked for Triton before `current` moves to it."""
    from recsys_runtime.artifacts import MANIFEST, new_version_name, publish, staging_directory
    from recsys_runtime.triton_links import link_served_version

    clone = new_version_name()
    manifest = json.loads((root / version / MANIFEST).read_text())
    with staging_directory(root, clone) as staging:
        shutil.copytree(root / version, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))
        link_served_version(root, clone)
        publish(staging, root, clone, {"config": manifest["config"], "report": manifest["report"]})
    return clone


class SpanCollector:
    """An OTLP/gRPC trace collector on 127.0.0.1 (the protocol's own service definition), keeping every span
    it is sent as (service.name, span)."""

    def __init__(self) -> None:
        from concurrent import futures

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans: list[tuple[str, Any]] = []
        collector = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                for resource_spans in request.resource_spans:
                    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend((attributes.get("service.name", ""), s) for s in scope_spans.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def env(self) -> dict[str, str]:
        """The standard OpenTelemetry settings that point a service here (batches flushed every 100 ms)."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def of_trace(self, trace_id: bytes) -> list[tuple[str, Any]]:
        return [(service, span) for service, span in list(self.spans) if span.trace_id == trace_id]

    def stop(self) -> None:
        self.server.stop(grace=None)
