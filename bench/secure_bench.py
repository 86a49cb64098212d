"""The gateway's public port over TLS with API-key bearer tokens, beside the plaintext port, in the same run.

    .venv/bin/python bench/secure_bench.py --artifacts ARTIFACT_ROOT --split SPLIT [--concurrency 8]
        [--seconds 15] [--rounds 3] [--out result.json]
    e.g. .venv/bin/python bench/secure_bench.py --artifacts /tmp/ml/art --split /tmp/ml/split  (ml-100k)

Starts two suites from the same artefact at once (each with its own state and log directories): one whose
gateway listens in plaintext, one whose gateway serves TLS with a certificate from the suite's CA and checks
an API key (`authorization: Bearer <key>`, RECSYS_AUTH=api-keys) on every call. In both, every hop between
the suite's own processes is mTLS, so the only difference measured is the public port: the TLS record layer
(and one handshake per phase) plus the token check, and on the client the token's call credentials. The
client is the project's GatewayConnection either way, in this process, on the same 2 cores.

Each suite is warmed up (a few hundred calls), then closed-loop phases (load_bench.closed_loop: C callers
sharing one channel, Gateway.Recommend k=10, users from the split's test.csv) alternate plaintext, TLS,
plaintext, TLS, ... for --rounds rounds, so drift on the 2-core machine hits both alike. Before the phases,
the TLS gateway is checked to refuse a call without a token and a plaintext caller.

Prints per mode the median over rounds of req/s, p50 and p99 (errors and degraded answers summed) and of
CPU time per request in the gateway process and in this client (the two places the modes differ; it moves
far less than req/s when other work shares the cores), each round's numbers, and the ratios TLS/plaintext
of the medians against the target: TLS+auth at most 15% slower (throughput ratio >= 0.85 and p99 ratio
<= 1.15). Then the same as JSON (also to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# bench/ is a folder of scripts, not a package: load_bench is found through the sys.path entry above.
from load_bench import Recorder, call, closed_loop  # type: ignore[import-not-found]  # noqa: E402

from recsys.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from recsys_runtime.triton_links import link_served_versions  # noqa: E402
from services.gateway.client import GatewayConnection  # noqa: E402
from services.launcher.supervisor import GATEWAY, PublicTLS, Suite, artifact_root  # noqa: E402

PLAIN, SECURE = "plaintext", "tls+auth"
MODES = (PLAIN, SECURE)
# "At most 15% slower": throughput at least 85% of plaintext's, p99 at most 115% of it.
MIN_THROUGHPUT_RATIO = 0.85
MAX_P99_RATIO = 1.15
WARM_UP_CALLS = 300
CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Mode:
    name: str
    connection: GatewayConnection
    gateway_pid: int

    def open_channel(self) -> grpc.aio.Channel:
        return self.connection.aio_channel()


async def warm_up(mode: Mode, users: list[str], calls: int, concurrency: int) -> Recorder:
    """`calls` Recommend calls from `concurrency` callers, so the first phase does not pay for cold caches."""
    recorder = Recorder()
    async with mode.open_channel() as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def caller(offset: int) -> None:
            for n in range(offset, calls, concurrency):
                await call(stub, users[n % len(users)], recorder, CALL_TIMEOUT_S)

        await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return recorder


async def refusal(connection: GatewayConnection, user: str) -> str:
    """The status code the gateway answers one Recommend over `connection` with (OK if it answers)."""
    async with connection.aio_channel() as channel:
        try:
            await gateway_pb2_grpc.GatewayStub(channel).Recommend(
                gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=2.0
            )
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
    return "OK"


async def measure(modes: dict[str, Mode], users: list[str], args: argparse.Namespace) -> dict[str, Any]:
    secure = modes[SECURE].connection
    checks = {
        "tls_without_token": await refusal(GatewayConnection(secure.target, ca=secure.ca), users[0]),
        "plaintext_to_tls_port": await refusal(GatewayConnection(secure.target), users[0]),
    }
    warm = {}
    for name, mode in modes.items():
        recorder = await warm_up(mode, users, WARM_UP_CALLS, args.concurrency)
        warm[name] = {"calls": WARM_UP_CALLS, "errors": recorder.errors, "degraded": recorder.degraded}
        if len(recorder.latencies) == 0:
            raise SystemExit(f"{name}: every warm-up call failed ({recorder.errors}); nothing to measure")
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    for number in range(1, args.rounds + 1):
        for name, mode in modes.items():  # plaintext first, then TLS, in every round
            gateway_cpu, client_cpu = cpu_seconds(mode.gateway_pid), time.process_time()
            result = await closed_loop(
                mode.connection.target,
                users,
                args.concurrency,
                args.seconds,
                open_channel=mode.open_channel,
            )
            # CPU per request, where the two modes differ: the gateway (TLS server side, token check) and this
            # client (TLS, the token's call credentials). Unlike req/s it barely moves when other work shares
            # the cores. (load_bench's 20 warm-up calls fall in the window too: ~1% of a phase, both modes.)
            answered = max(1, result["requests"])
            result["gateway_cpu_ms_per_request"] = (cpu_seconds(mode.gateway_pid) - gateway_cpu) * 1000 / answered
            result["client_cpu_ms_per_request"] = (time.process_time() - client_cpu) * 1000 / answered
            result.pop("versions_by_start", None)  # one entry per version stretch: noise in this report
            rounds[name].append(result)
            print(f"round {number} {row(name, result)}", file=sys.stderr, flush=True)
    return {"checks": checks, "warm_up": warm, "rounds": rounds}


def medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": statistics.median(r["rps"] for r in results),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "degraded": sum(r["degraded"] for r in results),
        "requests": sum(r["requests"] for r in results),
        "gateway_cpu_ms_per_request": statistics.median(r["gateway_cpu_ms_per_request"] for r in results),
        "client_cpu_ms_per_request": statistics.median(r["client_cpu_ms_per_request"] for r in results),
    }


def row(name: str, result: dict[str, Any]) -> str:
    return (
        f"{name:10} {result['rps']:8.1f} req/s  p50 {result['p50_ms']:6.1f}  p99 {result['p99_ms']:6.1f} ms"
        f"  errors {result['errors']}  degraded {result['degraded']}"
        f"  CPU/request: gateway {result['gateway_cpu_ms_per_request']:.2f} ms,"
        f" client {result['client_cpu_ms_per_request']:.2f} ms"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all its threads (Linux /proc/PID/stat)."""
    # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_suites(artifacts: Path, scratch: Path) -> dict[str, Suite]:
    """One suite per mode from the same artefact, each with its own SQLite state and logs under `scratch`."""
    # Serving-repository links made once here: two starts making the same missing link would race.
    link_served_versions(artifact_root(artifacts))
    return {
        name: Suite(
            artifacts=artifacts,
            port=0,
            state_dir=scratch / name / "state",
            log_dir=scratch / name / "logs",
            public_tls=PublicTLS() if name == SECURE else None,
        )
        for name in MODES
    }


def connections(suites: dict[str, Suite], addresses: dict[str, str]) -> dict[str, Mode]:
    secure = suites[SECURE]
    assert secure.generated_api_key is not None, "a public TLS suite without keys given makes one"
    secure_connection = GatewayConnection(addresses[SECURE], ca=secure.ca_file, token=secure.generated_api_key)
    return {
        PLAIN: Mode(PLAIN, GatewayConnection(addresses[PLAIN]), suites[PLAIN].children[GATEWAY].process.pid),
        SECURE: Mode(SECURE, secure_connection, secure.children[GATEWAY].process.pid),
    }


def report(measured: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    summary = {name: medians(measured["rounds"][name]) for name in MODES}
    throughput_ratio = summary[SECURE]["rps"] / summary[PLAIN]["rps"]
    p99_ratio = summary[SECURE]["p99_ms"] / summary[PLAIN]["p99_ms"]
    passed = throughput_ratio >= MIN_THROUGHPUT_RATIO and p99_ratio <= MAX_P99_RATIO
    print(
        f"\nGateway.Recommend k=10, closed loop, {args.concurrency} callers, {args.rounds} rounds x"
        f" {args.seconds:.0f} s per mode, phases alternating (2-core machine; internal hops mTLS in both)"
    )
    print(
        f"checks: TLS port without token -> {measured['checks']['tls_without_token']}, plaintext caller to TLS port"
        f" -> {measured['checks']['plaintext_to_tls_port']}"
    )
    for number in range(args.rounds):  # in the order the phases ran
        for name in MODES:
            print(f"  round {number + 1} {row(name, measured['rounds'][name][number])}")
    print("median over rounds (errors, degraded: summed):")
    for name in MODES:
        print(f"  {row(name, summary[name])}")
    pairs = list(zip(measured["rounds"][PLAIN], measured["rounds"][SECURE], strict=True))
    per_round = [secure["rps"] / plain["rps"] for plain, secure in pairs]
    p99_per_round = [secure["p99_ms"] / plain["p99_ms"] for plain, secure in pairs]
    print(
        f"TLS+auth / plaintext, of the medians (each round's pair): throughput {throughput_ratio:.3f}"
        f" ({', '.join(f'{r:.3f}' for r in per_round)}), p99 {p99_ratio:.3f}"
        f" ({', '.join(f'{r:.3f}' for r in p99_per_round)})"
    )
    extra_cpu = {
        side: summary[SECURE][f"{side}_cpu_ms_per_request"] - summary[PLAIN][f"{side}_cpu_ms_per_request"]
        for side in ("gateway", "client")
    }
    print(
        f"CPU per request, TLS+auth minus plaintext (medians): gateway {extra_cpu['gateway']:+.3f} ms,"
        f" client {extra_cpu['client']:+.3f} ms"
    )
    verdict = "PASS" if passed else "FAIL"
    print(
        f"{verdict}: target TLS+auth at most 15% slower (throughput ratio >= {MIN_THROUGHPUT_RATIO},"
        f" p99 ratio <= {MAX_P99_RATIO})"
    )
    # Stage timeouts (degraded answers, errors) mean the machine was overloaded: the modes did unlike work.
    unlike_work = any(summary[name]["errors"] or summary[name]["degraded"] for name in MODES)
    if unlike_work:
        print("  caution: errors or degraded answers during the phases; the two modes' answers were not all alike")
    return {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds_count": args.rounds,
        **measured,
        "median": summary,
        "throughput_ratio": throughput_ratio,
        "throughput_ratio_per_round": per_round,
        "p99_ratio_per_round": p99_per_round,
        "p99_ratio": p99_ratio,
        "extra_cpu_ms_per_request": extra_cpu,
        "target": {"min_throughput_ratio": MIN_THROUGHPUT_RATIO, "max_p99_ratio": MAX_P99_RATIO},
        "pass": passed,
        "unlike_work": unlike_work,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True, help="an artefact root (or one version)")
    parser.add_argument("--split", type=Path, required=True, help="a recbench split; users from its test.csv")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    users = pd.read_csv(args.split / "test.csv", dtype={"user_id": str})["user_id"].tolist()
    artifacts = args.artifacts.resolve()

    # Both suites start at once, each from its own thread. Those threads must outlive the suites: a child gets
    # SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG), so the pool closes only after the stops.
    with tempfile.TemporaryDirectory(prefix="secure-bench-") as scratch, ThreadPoolExecutor(len(MODES)) as starter:
        suites = make_suites(artifacts, Path(scratch))
        starting = {name: starter.submit(suite.start) for name, suite in suites.items()}
        try:
            addresses = {name: future.result() for name, future in starting.items()}
            print(f"suites ready: {addresses}", file=sys.stderr, flush=True)
            measured = asyncio.run(measure(connections(suites, addresses), users, args))
        finally:
            wait(starting.values())  # a start that failed has stopped its own suite; stop none mid-start
            for suite in suites.values():
                suite.stop()
    result = report(measured, args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
