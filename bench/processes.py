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
    fields = status_kib(pid, ("VmRSS", "VmHWM"))
    return {"rss_mib": fields["VmRSS"] / 1024, "peak_rss_mib": fields["VmHWM"] / 1024}


def process_tree(pid: int) -> list[int]:
    """pid and every descendant, from the parent ids in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and parentheses
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def status_kib(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in fields:
            values[key] = int(rest.split()[0])
    return values


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_memory(pid: int) -> dict[str, float]:
    """MiB summed over the process tree. VmRSS counts pages shared by several processes (libraries, the python
    backend's shared memory) once per process, Pss splits them; a VmHWM sum adds peaks that need not coincide."""
    totals = {"processes": 0.0, "VmRSS": 0.0, "VmHWM": 0.0, "Pss": 0.0}
    for member in process_tree(pid):
        try:
            status = status_kib(member, ("VmRSS", "VmHWM"))
            pss = pss_kib(member)
        except OSError:
            continue  # exited meanwhile
        totals["processes"] += 1
        totals["VmRSS"] += status.get("VmRSS", 0) / 1024
        totals["VmHWM"] += status.get("VmHWM", 0) / 1024
        totals["Pss"] += pss / 1024
    return totals


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
