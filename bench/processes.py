"""Starting the servers a benchmark measures: free ports, waiting for grpc.health.v1 SERVING, their memory."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.launcher.environment import service_environment


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def memory_mib(pid: int) -> dict[str, float]:
    """A live process's resident memory in MiB (Linux /proc/PID/status): now (VmRSS) and its peak so far
    (VmHWM), threads and all."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return {"rss_mib": fields["VmRSS"], "peak_rss_mib": fields["VmHWM"]}


def wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server for {address} exited with {process.returncode}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(address)


def start_server(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Run command (quietly) with env added to ours, as the launcher runs a service; return once
    127.0.0.1:port is SERVING."""
    process = subprocess.Popen(
        command, env={**service_environment(os.environ), **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_serving(f"127.0.0.1:{port}", process)
    except BaseException:
        process.kill()
        raise
    return process
