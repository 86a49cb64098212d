"""Load benchmark: Gateway.Recommend under a closed loop (C concurrent callers, each calling again as
soon as answered) and an open loop (requests started at a fixed rate, whatever the answers do), against
the suite's gateway and, in the same run, against a no-model one-hop grpc.aio server (bench/ceiling_server.py:
the plumbing ceiling). Prints req/s, p50/p95/p99, errors and degraded answers, and the suite's closed-loop
throughput as a ratio of the ceiling's.

    .venv/bin/python bench/load_bench.py --target HOST:PORT --split SPLIT [--concurrency 8] [--seconds 20]
        [--rate 100]
    .venv/bin/python bench/load_bench.py ... --no-ceiling --during "recsys train ... --out ARTIFACTS"
        closed loop before, while and after COMMAND runs (a retrain and switch under load): the versions
        the answers came from, in order, beside the errors
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import free_port, start_server  # noqa: E402

from recsys.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402

if TYPE_CHECKING:
    import grpc


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.degraded = 0
        self.answers: list[tuple[float, str]] = []  # (when sent, model version), in the order answers came

    def summary(self, seconds: float) -> dict[str, float | int | dict[str, int]]:
        ms = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {
            "requests": len(self.latencies) + sum(self.errors.values()),
            "rps": len(self.latencies) / seconds,
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
            "errors": sum(self.errors.values()),
            "error_codes": self.errors,
            "degraded": self.degraded,
            "versions": [version for version, _ in _stretches(self.answers)],
            "versions_by_start": _stretches(sorted(self.answers)),
        }


def _stretches(answers: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Each version once per stretch of consecutive answers, with when (s after the first call) the stretch's
    first request was sent. Sorted by when sent, that is the order requests met the versions in; in the order
    answers came back, requests still in flight at a switch (which finish on the version they started with)
    interleave with the first ones after it."""
    first = min((sent for sent, _ in answers), default=0.0)
    runs: list[tuple[str, float]] = []
    for sent, version in answers:
        if not runs or runs[-1][0] != version:
            runs.append((version, round(sent - first, 3)))
    return runs


async def call(stub: gateway_pb2_grpc.GatewayStub, user: str, recorder: Recorder, timeout: float) -> None:
    import grpc

    started = time.perf_counter()
    try:
        reply = await stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=timeout)
    except grpc.aio.AioRpcError as error:
        name = error.code().name
        recorder.errors[name] = recorder.errors.get(name, 0) + 1
        return
    recorder.latencies.append(time.perf_counter() - started)
    recorder.degraded += bool(reply.degraded_stages)
    recorder.answers.append((started, reply.model_version))


async def closed_loop(
    target: str,
    users: list[str],
    concurrency: int,
    seconds: float,
    during: str | None = None,
    open_channel: Callable[[], grpc.aio.Channel] | None = None,
) -> dict:  # type: ignore[type-arg]
    """C callers for `seconds`; with `during`, for `seconds` before the command, while it runs, and `seconds`
    after it exits. `open_channel` makes the one channel they share (default: plaintext to `target`)."""
    import grpc

    recorder = Recorder()
    async with (open_channel or (lambda: grpc.aio.insecure_channel(target)))() as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for user in users[:20]:  # warm-up
            await call(stub, user, Recorder(), 5.0)
        done = asyncio.Event()

        async def caller(offset: int) -> None:
            n = offset
            while not done.is_set():
                await call(stub, users[n % len(users)], recorder, 5.0)
                n += concurrency

        async def clock() -> None:
            await asyncio.sleep(seconds)
            if during is not None:
                process = await asyncio.create_subprocess_shell(during)
                code = await process.wait()
                print(f"`{during}` exited with {code}", file=sys.stderr)
                await asyncio.sleep(seconds)
            done.set()

        started = time.perf_counter()
        await asyncio.gather(clock(), *(caller(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"mode": "closed", "concurrency": concurrency, **recorder.summary(elapsed)}


async def open_loop(target: str, users: list[str], rate: float, seconds: float) -> dict:  # type: ignore[type-arg]
    import grpc

    recorder = Recorder()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        started = time.perf_counter()
        tasks = []
        for n in range(int(rate * seconds)):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(stub, users[n % len(users)], recorder, 5.0)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"mode": "open", "rate": rate, **recorder.summary(elapsed)}


def row(name: str, result: dict) -> str:  # type: ignore[type-arg]
    return (
        f"  {name:34} {result['rps']:8.1f} req/s  p50 {result['p50_ms']:6.1f}  p95 {result['p95_ms']:6.1f}"
        f"  p99 {result['p99_ms']:6.1f} ms  errors {result['errors']}  degraded {result['degraded']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--no-ceiling", action="store_true", help="suite rows only (e.g. for a fault run)")
    parser.add_argument("--during", help="a shell command run under load (closed loop only)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    users = pd.read_csv(args.split / "test.csv", dtype={"user_id": str})["user_id"].tolist()

    results = {}
    if not args.no_ceiling:
        port = free_port()
        ceiling = start_server([sys.executable, str(ROOT / "bench" / "ceiling_server.py"), str(port)], {}, port)
        try:
            results["ceiling_closed"] = asyncio.run(
                closed_loop(f"127.0.0.1:{port}", users, args.concurrency, args.seconds)
            )
        finally:
            ceiling.terminate()
            ceiling.wait()
    results["suite_closed"] = asyncio.run(closed_loop(args.target, users, args.concurrency, args.seconds, args.during))
    if not args.no_ceiling:
        results["suite_open"] = asyncio.run(open_loop(args.target, users, args.rate, args.seconds))
    print(f"\nGateway.Recommend k=10, {args.seconds:.0f} s per row (2-core machine)")
    if "ceiling_closed" in results:
        print(row(f"one-hop no-model server, closed {args.concurrency}", results["ceiling_closed"]))
    print(row(f"suite, closed {args.concurrency}", results["suite_closed"]))
    if args.during:
        sent = " -> ".join(f"{v} (from {t:.1f} s)" for v, t in results["suite_closed"]["versions_by_start"])
        print(f"  requests met the versions, in the order sent: {sent}")
        came_back = " -> ".join(results["suite_closed"]["versions"])
        print(f"  answers came from versions, in the order they came back: {came_back}")
    if "suite_open" in results:
        print(row(f"suite, open {args.rate:.0f} req/s", results["suite_open"]))
        ratio = results["suite_closed"]["rps"] / results["ceiling_closed"]["rps"]
        results["ratio"] = ratio
        print(f"suite closed-loop throughput: {ratio:.1%} of the one-hop ceiling (target >= 10%, p99 <= 50 ms)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
