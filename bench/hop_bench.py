"""What one gRPC hop costs a grpc.aio process, under each completion-queue poller.

A front server answers each request by making CALLS unary calls to a back server (the gateway makes three);
a closed loop of CONCURRENCY client threads drives the front. Reported: the front process's CPU per request
and the throughput, for grpcio's default poller and for GRPC_EXPERIMENTS=-event_engine_poller_for_python
(the classic poller that `recsys serve` sets), alternating over ROUNDS rounds, medians and their ratio.

    python bench/hop_bench.py [--calls 3] [--concurrency 2] [--seconds 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.v1 import common_pb2, features_pb2, features_pb2_grpc

POLLERS = {"default": "", "classic": "-event_engine_poller_for_python"}


def _reply() -> bytes:
    """A user context about the size the features service answers with."""
    context = common_pb2.UserContext(
        user_id="42",
        known_user=True,
        artifact_version="v1",
        history=[common_pb2.HistoryEntry(item_id=str(i), timestamp=880_000_000 + i, item_index=i) for i in range(50)],
        seen_item_ids=[str(i) for i in range(120)],
    )
    context.sequence.item_indices.extend(range(50))
    context.sequence.length = 50
    return context.SerializeToString()


class Back(features_pb2_grpc.FeatureServiceServicer):
    def __init__(self) -> None:
        self.reply = _reply()

    async def GetUserContext(
        self, request: features_pb2.GetUserContextRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.UserContext:
        return common_pb2.UserContext.FromString(self.reply)


class Front(features_pb2_grpc.FeatureServiceServicer):
    def __init__(self, stub: features_pb2_grpc.FeatureServiceStub, calls: int) -> None:
        self.stub, self.calls = stub, calls

    async def GetUserContext(
        self, request: features_pb2.GetUserContextRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.UserContext:
        reply = common_pb2.UserContext()
        for _ in range(self.calls):
            reply = await self.stub.GetUserContext(request, timeout=5)
        return reply


async def _serve(role: str, back: str, calls: int) -> None:
    server = grpc.aio.server()
    if role == "back":
        servicer: features_pb2_grpc.FeatureServiceServicer = Back()
    else:
        channel = grpc.aio.insecure_channel(back)
        servicer = Front(features_pb2_grpc.FeatureServiceStub(channel), calls)
    features_pb2_grpc.add_FeatureServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def _start(role: str, poller: str, back: str = "", calls: int = 0) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "GRPC_EXPERIMENTS": POLLERS[poller]}
    command = [sys.executable, __file__, "--role", role, "--back", back, "--calls", str(calls)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(port: int, pid: int, concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests per second, front CPU ms per request) over a closed loop."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = features_pb2_grpc.FeatureServiceStub(channel)
    request = features_pb2.GetUserContextRequest(user_id="42")
    for _ in range(200):  # warm up connections
        stub.GetUserContext(request, timeout=5)
    counts = [0] * concurrency
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            stub.GetUserContext(request, timeout=5)
            counts[i] += 1

    cpu, started = _cpu_seconds(pid), time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, used, requests = time.perf_counter() - started, _cpu_seconds(pid) - cpu, sum(counts)
    channel.close()
    return requests / wall, 1000 * used / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--role", choices=["back", "front"], help=argparse.SUPPRESS)
    parser.add_argument("--back", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        asyncio.run(_serve(args.role, args.back, args.calls))
        return
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in POLLERS}
    for _ in range(args.rounds):
        for poller in POLLERS:
            back, back_port = _start("back", poller)
            front, front_port = _start("front", poller, f"127.0.0.1:{back_port}", args.calls)
            try:
                results[poller].append(_drive(front_port, front.pid, args.concurrency, args.seconds))
            finally:
                for process in (front, back):
                    process.terminate()
                    process.wait()
    print(
        f"front server making {args.calls} downstream calls per request, "
        f"{args.concurrency} clients, medians of {args.rounds}"
    )
    cpu = {}
    for poller, runs in results.items():
        rps, cpu[poller] = statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)
        runs_rps = [round(r) for r, _ in runs]
        print(f"  {poller:8s} poller: {rps:7.0f} req/s   front CPU {cpu[poller]:.3f} ms/request   runs {runs_rps}")
    print(f"  classic / default CPU per request: {cpu['classic'] / cpu['default']:.2f}")


if __name__ == "__main__":
    main()
