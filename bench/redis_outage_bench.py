"""Redis outage under load: the suite (its features service on Redis) serves C closed-loop callers, each
alternating Gateway.Recommend (k=10, a known user) and Gateway.RecordEvents (1-3 events with unique event
ids, items of the artefact's catalogue, timestamps now); redis-server is killed with SIGKILL mid-run, then
started again on the same port and data directory (it replays its append-only file, fsynced at every write).

Per phase (before, Redis down, after): Recommend count, errors by code, answers flagged STAGE_FEATURES,
p50/p99; RecordEvents acknowledged and refused by code. The "before" phase is the baseline of the same run.
Then every acknowledged event is read back from Redis (the event id in the user's id set and the event in the
user's list, with the project's RedisEventStore). Exits 1 when an acknowledged event is lost, a Recommend
failed, or the features service never answered unflagged again after Redis came back.

    .venv/bin/python bench/redis_outage_bench.py --artifacts ARTIFACT_ROOT [--concurrency 8]
        [--seconds-before 10] [--seconds-down 10] [--seconds-after 10] [--out result.json]

ARTIFACT_ROOT is what `python -m services.launcher train --out ARTIFACT_ROOT ...` wrote; the suite's logs go
to ARTIFACT_ROOT/logs (this run's Redis-related lines are quoted in the result).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import redis.asyncio as redis_asyncio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from recsys_runtime.artifacts import open_verified_version  # noqa: E402
from recsys_runtime.layout import CATALOG_DIR, HISTORIES_FILE  # noqa: E402
from services.features.adapters import (  # noqa: E402
    DEFAULT_MAX_EVENT_IDS_PER_USER,
    DEFAULT_MAX_EVENTS_PER_USER,
    RedisEventStore,
)
from services.launcher.supervisor import Suite, artifact_root  # noqa: E402

PHASES = ("before", "down", "after")
CALL_TIMEOUT_S = 5.0
MAX_USERS = 500
FLAGGED = gateway_pb2.STAGE_FEATURES


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisProcess:
    """redis-server on 127.0.0.1 with an append-only file fsynced at every write; `kill` is a crash (SIGKILL),
    `start` again reuses the port and the directory, so the restarted server replays what was acknowledged."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> float:
        """Start and wait until it answers PING (not LOADING); returns the seconds that took."""
        started = time.monotonic()
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        command += ["--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() - started > timeout_s:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.kill()
                raise RuntimeError(f"redis-server did not start:\n{log}")
            time.sleep(0.02)
        return time.monotonic() - started

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@dataclass
class PhaseRecord:
    recommend_ms: list[float] = field(default_factory=list)
    recommend_errors: Counter[str] = field(default_factory=Counter)
    recommend_flagged: int = 0
    recommend_other_degraded: Counter[str] = field(default_factory=Counter)
    record_ms: list[float] = field(default_factory=list)
    events_acknowledged: int = 0
    record_refused: Counter[str] = field(default_factory=Counter)
    started: float = 0.0  # time.monotonic() when the phase began
    # Per kind of trouble (flagged, refused, ...), when each such call was sent, in seconds into the phase.
    trouble_sent_at: dict[str, list[float]] = field(default_factory=dict)

    def note(self, kind: str, sent: float) -> None:
        self.trouble_sent_at.setdefault(kind, []).append(sent - self.started)

    def summary(self) -> dict[str, Any]:
        def percentile(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 2) if values else None

        return {
            "recommend": len(self.recommend_ms) + sum(self.recommend_errors.values()),
            "recommend_ok": len(self.recommend_ms),
            "recommend_errors": dict(self.recommend_errors),
            "recommend_flagged_features": self.recommend_flagged,
            "recommend_other_degraded": dict(self.recommend_other_degraded),
            "recommend_p50_ms": percentile(self.recommend_ms, 50),
            "recommend_p99_ms": percentile(self.recommend_ms, 99),
            "record_calls": len(self.record_ms) + sum(self.record_refused.values()),
            "record_acknowledged_calls": len(self.record_ms),
            "record_refused": dict(self.record_refused),
            "events_acknowledged": self.events_acknowledged,
            "record_p50_ms": percentile(self.record_ms, 50),
            "record_p99_ms": percentile(self.record_ms, 99),
            # When trouble happened: a burst at the phase's start (in flight at the kill, or before the
            # reconnect) differs from trouble all along.
            "trouble_sent_at_s": {
                kind: {
                    "count": len(times),
                    "first": round(min(times), 3),
                    "last": round(max(times), 3),
                    "after_first_second": sum(t > 1.0 for t in times),
                }
                for kind, times in sorted(self.trouble_sent_at.items())
            },
        }


@dataclass
class Run:
    phase: str = "before"
    phases: dict[str, PhaseRecord] = field(default_factory=lambda: {p: PhaseRecord() for p in PHASES})
    acknowledged: list[common_pb2.Event] = field(default_factory=list)
    restarted_at: float | None = None
    first_unflagged_after: float | None = None
    first_ack_after: float | None = None
    origin: float = 0.0
    # When each answered Recommend was sent (s after the load began): throughput over time, outage aside.
    answered_sent: list[float] = field(default_factory=list)


async def caller(
    stub: gateway_pb2_grpc.GatewayStub,
    run: Run,
    index: int,
    users: list[str],
    items: list[str],
    run_id: str,
    stop: asyncio.Event,
) -> None:
    rng = random.Random(index)
    n = 0
    while not stop.is_set():
        user = users[rng.randrange(len(users))]
        # A call counts in the phase it was sent in.
        phase = run.phases[run.phase]
        sent_after_restart = run.restarted_at is not None
        sent = time.monotonic()
        started = time.perf_counter()
        try:
            reply = await stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=CALL_TIMEOUT_S)
            phase.recommend_ms.append((time.perf_counter() - started) * 1000)
            run.answered_sent.append(sent - run.origin)
            flagged = FLAGGED in reply.degraded_stages
            phase.recommend_flagged += flagged
            if flagged:
                phase.note("recommend flagged STAGE_FEATURES", sent)
            for stage in reply.degraded_stages:
                if stage != FLAGGED:
                    phase.recommend_other_degraded[gateway_pb2.Stage.Name(stage)] += 1
                    phase.note(f"recommend degraded {gateway_pb2.Stage.Name(stage)}", sent)
            if sent_after_restart and not flagged and run.first_unflagged_after is None:
                run.first_unflagged_after = time.monotonic()
        except grpc.aio.AioRpcError as error:
            phase.recommend_errors[error.code().name] += 1
            phase.note(f"recommend error {error.code().name}", sent)

        now = int(time.time())
        events = []
        for _ in range(rng.randint(1, 3)):
            events.append(
                common_pb2.Event(
                    user_id=user,
                    item_id=items[rng.randrange(len(items))],
                    timestamp=now,
                    event_id=f"{run_id}-{index}-{n}",
                )
            )
            n += 1
        phase = run.phases[run.phase]
        sent_after_restart = run.restarted_at is not None
        sent = time.monotonic()
        started = time.perf_counter()
        try:
            answer = await stub.RecordEvents(gateway_pb2.RecordEventsRequest(events=events), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            phase.record_refused[error.code().name] += 1
            phase.note(f"record refused {error.code().name}", sent)
            continue
        phase.record_ms.append((time.perf_counter() - started) * 1000)
        if answer.accepted + answer.duplicates != len(events):
            print(f"RecordEvents answered {answer} for {len(events)} events", file=sys.stderr)
        phase.events_acknowledged += len(events)
        run.acknowledged.extend(events)
        if sent_after_restart and run.first_ack_after is None:
            run.first_ack_after = time.monotonic()


async def drive(
    address: str,
    redis_server: RedisProcess,
    users: list[str],
    items: list[str],
    concurrency: int,
    seconds: tuple[float, float, float],
) -> tuple[Run, dict[str, float]]:
    run = Run()
    run_id = uuid.uuid4().hex[:8]
    timeline: dict[str, float] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for user in users[:10]:  # warm-up, not counted
            await stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=CALL_TIMEOUT_S)
        stop = asyncio.Event()
        origin = run.origin = run.phases["before"].started = time.monotonic()
        tasks = [asyncio.create_task(caller(stub, run, i, users, items, run_id, stop)) for i in range(concurrency)]
        await asyncio.sleep(seconds[0])
        run.phases["down"].started = time.monotonic()
        redis_server.kill()  # blocks the loop for the kill's few milliseconds only
        run.phase = "down"
        timeline["killed_at_s"] = time.monotonic() - origin
        await asyncio.sleep(seconds[1])
        run.phases["after"].started = run.restarted_at = time.monotonic()
        run.phase = "after"
        timeline["restart_at_s"] = run.restarted_at - origin
        timeline["redis_start_s"] = await asyncio.to_thread(redis_server.start)
        await asyncio.sleep(seconds[2])
        stop.set()
        await asyncio.gather(*tasks)
        timeline["ended_at_s"] = time.monotonic() - origin
    for name, when in (("first_unflagged_recommend", run.first_unflagged_after), ("first_ack", run.first_ack_after)):
        if when is not None:
            timeline[f"{name}_after_restart_s"] = when - run.restarted_at
    return run, timeline


async def verify(redis_url: str, prefix: str, acknowledged: list[common_pb2.Event]) -> dict[str, Any]:
    """Every acknowledged event back from Redis: its id claimed in the user's id set, and its entry (item,
    timestamp) in the user's list, each list entry matching one acknowledged event at most."""
    store = RedisEventStore(redis_url, prefix, read_timeout_s=10.0)
    await store.open()
    client = redis_asyncio.Redis.from_url(redis_url)
    by_user: dict[str, list[common_pb2.Event]] = {}
    for event in acknowledged:
        by_user.setdefault(event.user_id, []).append(event)
    lost: list[dict[str, Any]] = []
    ids_missing = entries_missing = 0
    try:
        for user, events in by_user.items():
            stored = Counter(await store.events_for(user))
            scores = await client.zmscore(store.event_ids_key(user), [e.event_id for e in events])
            for event, score in zip(events, scores, strict=True):
                id_found = score is not None
                entry_found = stored[(event.item_id, event.timestamp)] > 0
                if entry_found:
                    stored[(event.item_id, event.timestamp)] -= 1
                ids_missing += not id_found
                entries_missing += not entry_found
                if not (id_found and entry_found):
                    lost.append(
                        {
                            "user_id": user,
                            "event_id": event.event_id,
                            "item_id": event.item_id,
                            "timestamp": event.timestamp,
                            "id_found": id_found,
                            "entry_found": entry_found,
                        }
                    )
    finally:
        await client.aclose()
        await store.close()
    most = max((len(e) for e in by_user.values()), default=0)
    return {
        "acknowledged": len(acknowledged),
        "found": len(acknowledged) - len(lost),
        "lost": len(lost),
        "ids_missing": ids_missing,
        "entries_missing": entries_missing,
        "lost_examples": lost[:20],
        "users_written": len(by_user),
        # Above the stores' per-user caps, trimming (by design) would pass for loss.
        "most_events_per_user": most,
        "under_per_user_caps": most <= min(DEFAULT_MAX_EVENTS_PER_USER, DEFAULT_MAX_EVENT_IDS_PER_USER),
    }


def log_offsets(log_dir: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in log_dir.glob("*.log")}


def redis_log_lines(log_dir: Path, offsets: dict[str, int], limit: int = 6) -> dict[str, dict[str, Any]]:
    """This run's lines of each suite log that mention Redis: how many, and the first and last few."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(log_dir.glob("*.log")):
        with path.open("rb") as log:
            log.seek(offsets.get(path.name, 0))
            lines = [line for line in log.read().decode(errors="replace").splitlines() if "redis" in line.lower()]
        if lines:
            shown = lines if len(lines) <= 2 * limit else [*lines[:limit], "...", *lines[-limit:]]
            found[path.name] = {"lines": len(lines), "excerpt": [line[:400] for line in shown]}
    return found


def known_users_and_items(artifacts: Path) -> tuple[list[str], list[str]]:
    version = open_verified_version(artifacts).path
    histories = pd.read_parquet(version / HISTORIES_FILE, columns=["user_id"])
    users = sorted({str(u) for u in histories["user_id"].unique()})
    items = [str(i) for i in pd.read_parquet(version / CATALOG_DIR / "items.parquet", columns=["item_id"])["item_id"]]
    return random.Random(0).sample(users, min(MAX_USERS, len(users))), items


WINDOW_S = 5.0


def answered_per_window(sent: list[float], total_s: float) -> list[float]:
    """Answered Recommend per second in consecutive windows of WINDOW_S: whether throughput drifts within a
    phase (load elsewhere on the machine, growing per-user lists) or moves with the outage."""
    windows = max(1, int(np.ceil(total_s / WINDOW_S)))
    counts = np.bincount(np.minimum((np.asarray(sent) // WINDOW_S).astype(int), windows - 1), minlength=windows)
    return [round(float(c) / WINDOW_S, 1) for c in counts]


def by_code(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "0"


def print_table(result: dict[str, Any]) -> None:
    phases = result["phases"]
    seconds = result["seconds"]
    print(f"\nRedis SIGKILLed under load: {result['concurrency']} closed-loop callers, Recommend k=10 + RecordEvents")
    header = f"  {'':34}" + "".join(f"{p:>22}" for p in PHASES)
    print(header)
    rows: list[tuple[str, Any]] = [
        ("seconds", lambda p: f"{seconds[p]:.0f}"),
        ("Recommend answered", lambda p: phases[p]["recommend_ok"]),
        ("  req/s", lambda p: f"{phases[p]['recommend'] / seconds[p]:.1f}"),
        ("  errors", lambda p: by_code(phases[p]["recommend_errors"])),
        ("  flagged STAGE_FEATURES", lambda p: phases[p]["recommend_flagged_features"]),
        ("  other stages degraded", lambda p: by_code(phases[p]["recommend_other_degraded"])),
        ("  p50 ms", lambda p: phases[p]["recommend_p50_ms"]),
        ("  p99 ms", lambda p: phases[p]["recommend_p99_ms"]),
        ("RecordEvents calls", lambda p: phases[p]["record_calls"]),
        ("  acknowledged calls", lambda p: phases[p]["record_acknowledged_calls"]),
        ("  refused by code", lambda p: by_code(phases[p]["record_refused"])),
        ("  events acknowledged", lambda p: phases[p]["events_acknowledged"]),
        ("  p50 ms (acknowledged)", lambda p: phases[p]["record_p50_ms"]),
        ("  p99 ms (acknowledged)", lambda p: phases[p]["record_p99_ms"]),
    ]
    for name, value in rows:
        print(f"  {name:34}" + "".join(f"{value(p)!s:>22}" for p in PHASES))
    for name in PHASES:
        for kind, when in phases[name]["trouble_sent_at_s"].items():
            print(
                f"  {name}: {when['count']} {kind}, sent {when['first']:.2f}-{when['last']:.2f} s into the phase"
                f" ({when['after_first_second']} after its first second)"
            )
    per_window = ", ".join(f"{rate:g}" for rate in result["recommend_answered_per_s_by_window"])
    print(f"  Recommend answered/s per {WINDOW_S:g} s window, whole run: {per_window}")
    timeline = result["timeline"]
    print(
        f"  redis-server back in {timeline['redis_start_s'] * 1000:.0f} ms (AOF replay); after the restart, first"
        f" acknowledged write {timeline.get('first_ack_after_restart_s', float('nan')):.2f} s, first unflagged"
        f" Recommend {timeline.get('first_unflagged_recommend_after_restart_s', float('nan')):.2f} s"
    )
    check = result["verification"]
    print(
        f"  acknowledged events {check['acknowledged']}, found in Redis after the restart {check['found']},"
        f" lost {check['lost']} (ids missing {check['ids_missing']}, entries missing {check['entries_missing']};"
        f" {check['users_written']} users, at most {check['most_events_per_user']} events each)"
    )
    print(f"  verdict: {'PASS' if result['passed'] else 'FAIL'} {'; '.join(result['failures'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True, help="an artefact root the trainer wrote")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds-before", type=float, default=10.0)
    parser.add_argument("--seconds-down", type=float, default=10.0)
    parser.add_argument("--seconds-after", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="write the result as JSON here too")
    args = parser.parse_args()
    artifacts = args.artifacts.resolve()
    users, items = known_users_and_items(artifacts)
    log_dir = artifact_root(artifacts) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    offsets = log_offsets(log_dir)
    prefix = f"outage-bench-{uuid.uuid4().hex[:8]}"
    seconds = (args.seconds_before, args.seconds_down, args.seconds_after)

    with tempfile.TemporaryDirectory(prefix="redis-outage-") as directory:
        redis_server = RedisProcess(Path(directory))
        redis_server.start()
        suite = Suite(
            artifacts=artifacts,
            port=0,
            extra_env={"RECSYS_STORE": "redis", "RECSYS_REDIS_URL": redis_server.url, "RECSYS_REDIS_PREFIX": prefix},
        )
        try:
            address = suite.start()
            run, timeline = asyncio.run(drive(address, redis_server, users, items, args.concurrency, seconds))
            exited = suite.exited()
            verification = asyncio.run(verify(redis_server.url, prefix, run.acknowledged))
            redis_log = [line for line in (Path(directory) / "redis.log").read_text().splitlines() if line.strip()]
        finally:
            suite.stop()
            redis_server.kill()

    phases = {name: record.summary() for name, record in run.phases.items()}
    failures = []
    if verification["lost"]:
        failures.append(f"{verification['lost']} acknowledged events lost")
    recommend_errors = sum(sum(p["recommend_errors"].values()) for p in phases.values())
    if recommend_errors:
        failures.append(f"{recommend_errors} Recommend calls failed")
    if run.first_unflagged_after is None:
        failures.append("no unflagged Recommend after Redis came back: the features service did not reconnect")
    if run.first_ack_after is None:
        failures.append("no RecordEvents acknowledged after Redis came back")
    if exited:
        failures.append(f"suite processes exited: {exited}")
    result = {
        "artifacts": str(artifacts),
        "concurrency": args.concurrency,
        "seconds": dict(zip(PHASES, seconds, strict=True)),
        "users": len(users),
        "phases": phases,
        "timeline": {k: round(v, 3) for k, v in timeline.items()},
        "recommend_answered_per_s_by_window": answered_per_window(run.answered_sent, sum(seconds)),
        "verification": verification,
        "suite_log_redis_lines": redis_log_lines(log_dir, offsets),
        "redis_server_log_tail": redis_log[-25:],
        "passed": not failures,
        "failures": failures,
    }
    print_table(result)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
