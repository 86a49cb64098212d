"""Feature preprocessing benchmark: the fitted workflow on a generated 1M-interaction data set, and the
features service's user-context latency over gRPC with SQLite and with Redis, each beside a plain
pandas / dict baseline measured in the same run.

    .venv/bin/python bench/features_bench.py [--interactions 1000000] [--users 50000] [--items 20000]
        [--repeat 3] [--requests 3000] [--events-per-user 3] [--concurrency 8] [--json PATH]

Every measured phase runs in its own process, so peak memory (ru_maxrss) is that phase's alone. Each server
(the dict baseline, the features service per store) is timed from its start to SERVING and its resident
memory read from /proc (when ready, after the requests, and its peak). Before the requests, every user with
a history gets --events-per-user recorded events through RecordEvents, so the store holds events of all
users and every request reads a non-empty entry; the requests go to users drawn uniformly from all of them.
Prints a table and writes the numbers as JSON (--json PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import free_port, memory_mib, start_server  # noqa: E402

# ---------------------------------------------------------------- data


MALFORMED_ROWS = ("u1,,1600000000,3\n", "u1,i1,yesterday,3\n", "u1,i1\n", "u1,i1,1600000000,x\n")
GENRES = ["action", "comedy", "drama", "horror", "romance", "scifi", "animation", "crime"]


def numbered(prefix: str, numbers: np.ndarray) -> pa.Array:
    """prefix + the decimal number, built by Arrow's kernels: no Python per row."""
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def write_csv(table: pa.Table, path: Path) -> None:
    """Plain CSV as pandas writes it: nothing quoted (no generated value holds a comma, quote or newline)."""
    with path.open("wb") as handle:
        handle.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def generate_raw(directory: Path, interactions: int, users: int, items: int, seed: int = 0) -> dict[str, Path]:
    """Zipf-popular items, skewed user activity (each user at least once), attributes of every kind, and 0.1%
    malformed rows."""
    rng = np.random.default_rng(seed)
    item_weights = 1.0 / np.arange(1, items + 1) ** 0.9
    item_weights /= item_weights.sum()
    user_weights = rng.gamma(0.7, 1.0, users)
    user_weights /= user_weights.sum()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.csv" for name in ("interactions", "items", "users")}
    user_numbers = rng.choice(users, interactions, p=user_weights)
    # Every user has at least one interaction (when there are enough), so each has a history to serve; its own
    # generator leaves every other draw as it was.
    first = min(users, interactions)
    user_numbers[:first] = np.random.default_rng(seed + 1).permutation(users)[:first]
    write_csv(
        pa.table(
            {
                "user_id": numbered("u", user_numbers),
                "item_id": numbered("i", rng.choice(items, interactions, p=item_weights)),
                "timestamp": rng.integers(1_600_000_000, 1_631_536_000, interactions),
                "rating": rng.integers(1, 6, interactions),
            }
        ),
        paths["interactions"],
    )
    bad = max(1, interactions // 1000)
    with paths["interactions"].open("a") as handle:  # malformed rows the cleaning must count
        handle.write("".join(np.resize(np.array(MALFORMED_ROWS), bad)))
    genres = pa.array(GENRES)
    # 1-3 distinct genres per item: the first k of a random order of all of them.
    order = np.argsort(rng.random((items, len(GENRES))), axis=1)
    counts = rng.integers(1, 4, items)
    picked = [pc.if_else(pa.array(counts > k), pc.take(genres, order[:, k]), None) for k in range(3)]
    item_numbers = np.arange(items)
    write_csv(
        pa.table(
            {
                "item_id": numbered("i", item_numbers),
                "title": pc.binary_join_element_wise(
                    "The ", pc.take(genres, item_numbers % len(GENRES)), " of item ", numbered("", item_numbers), ""
                ),
                "genres": pc.binary_join_element_wise(*picked, "|", null_handling="skip"),
                "year": rng.integers(1950, 2022, items),
            }
        ),
        paths["items"],
    )
    write_csv(
        pa.table(
            {
                "user_id": numbered("u", np.arange(users)),
                "age": rng.integers(16, 80, users),
                "gender": pc.take(pa.array(["f", "m", "x"]), rng.integers(0, 3, users)),
                "country": pc.take(pa.array(["de", "fr", "es", "it", "uk", "us"]), rng.integers(0, 6, users)),
                "zip": pc.utf8_lpad(pc.cast(pa.array(rng.integers(0, 99_999, users)), pa.string()), 5, "0"),
            }
        ),
        paths["users"],
    )
    return paths


# ---------------------------------------------------------------- phases run in child processes


def width(encoded: Any) -> int:
    """Columns of an encoded attribute table, all kinds together."""
    return int(
        sum(block.shape[1] for block in (encoded.categorical, encoded.numeric, encoded.multi_hot, encoded.tokens))
    )


def phase_workflow(data: Path, max_history: int) -> dict[str, Any]:
    """The project's path: read + clean with a quality report, fit, transform everything."""
    from recsys_runtime.workflow import Workflow
    from trainer.data import load_csvs

    t0 = time.perf_counter()
    dataset = load_csvs(data / "interactions.csv", data / "items.csv", data / "users.csv")
    t1 = time.perf_counter()
    workflow = Workflow.fit(dataset.interactions, max_history, items=dataset.items, users=dataset.users)
    t2 = time.perf_counter()
    encoded = workflow.encode_interactions(dataset.interactions)
    user_ids, sequences = workflow.encode_histories(dataset.interactions)
    assert dataset.items is not None and dataset.users is not None
    items = workflow.item_attributes.encode_frame(dataset.items)
    users = workflow.user_attributes.encode_frame(dataset.users)
    t3 = time.perf_counter()
    return {
        "read_clean_s": t1 - t0,
        "fit_s": t2 - t1,
        "transform_s": t3 - t2,
        "total_s": t3 - t0,
        "rows_kept": len(encoded),
        "rejected": dict(dataset.quality[0].rejected),
        "sequences": list(sequences.item_indices.shape),
        "users": len(user_ids),
        "item_attributes_width": width(items),
        "user_attributes_width": width(users),
    }


def phase_baseline(data: Path, max_history: int) -> dict[str, Any]:
    """Plain pandas: read, drop unparsable, factorize ids, last L items per user as lists. No report, no
    attributes, no stable vocabulary: the floor the workflow's extra work is measured against."""
    t0 = time.perf_counter()
    frame = pd.read_csv(data / "interactions.csv", on_bad_lines="skip")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    frame = frame.dropna(subset=["user_id", "item_id", "timestamp"])
    t1 = time.perf_counter()
    frame["user_index"], _ = pd.factorize(frame["user_id"], sort=True)
    frame["item_index"], _ = pd.factorize(frame["item_id"], sort=True)
    t2 = time.perf_counter()
    ordered = frame.sort_values(["user_index", "timestamp"], kind="stable")
    sequences = ordered.groupby("user_index")["item_index"].apply(lambda s: s.to_numpy()[-max_history:])
    t3 = time.perf_counter()
    return {
        "read_clean_s": t1 - t0,
        "fit_s": t2 - t1,
        "transform_s": t3 - t2,
        "total_s": t3 - t0,
        "rows_kept": len(frame),
        "users": len(sequences),
    }


def run_phase(name: str, data: Path, max_history: int) -> dict[str, Any]:
    """One phase in a fresh interpreter; its peak RSS comes back with its timings."""
    done = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--data", str(data), "--max-history", str(max_history)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- latency


def publish_features_artifact(data: Path, root: Path, max_history: int) -> Path:
    """An artefact version with what the features service loads (workflow, histories, catalogue)."""
    from recsys_runtime import artifacts
    from recsys_runtime.layout import CATALOG_DIR, HISTORIES_FILE, WORKFLOW_DIR
    from recsys_runtime.workflow import Workflow
    from trainer.data import load_csvs

    dataset = load_csvs(data / "interactions.csv", data / "items.csv", data / "users.csv")
    workflow = Workflow.fit(dataset.interactions, max_history, items=dataset.items, users=dataset.users)
    version = artifacts.new_version_name()
    with artifacts.staging_directory(root, version) as staging:
        workflow.save(staging / WORKFLOW_DIR)
        (staging / CATALOG_DIR).mkdir()
        assert dataset.items is not None and dataset.users is not None
        dataset.items.to_parquet(staging / CATALOG_DIR / "items.parquet", index=False)
        dataset.users.to_parquet(staging / CATALOG_DIR / "users.parquet", index=False)
        ordered = dataset.interactions.sort_values(["user_id", "timestamp"], kind="stable")
        ordered[["user_id", "item_id", "timestamp"]].to_parquet(staging / HISTORIES_FILE, index=False)
        return artifacts.publish(staging, root, version, {"config": {}, "report": {"purpose": "features bench"}})


def sample_users(users: pd.Series, requests: int, id_range: int) -> tuple[list[str], list[str], dict[str, Any]]:
    """Users drawn uniformly from all with a history (warm-up users apart from the measured ones), and how the
    measured ones spread over the generated id range u0..u{id_range-1}, in tenths."""
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(users), requests)
    warm_up = rng.integers(0, len(users), min(200, requests))
    numbers = users.iloc[picks].str.slice(1).astype(np.int64).to_numpy()
    tenths, _ = np.histogram(numbers, bins=10, range=(0, id_range))
    coverage = {
        "users_with_history": len(users),
        "requests": requests,
        "distinct_users": len(np.unique(picks)),
        "lowest_id": f"u{numbers.min()}",
        "highest_id": f"u{numbers.max()}",
        "per_tenth_of_id_range": tenths.tolist(),
    }
    return users.iloc[picks].tolist(), users.iloc[warm_up].tolist(), coverage


def measure_latency(address: str, picks: list[str], warm_up: list[str]) -> dict[str, float]:
    """Sequential calls, one in flight: the latency of one request, and the rate that gives."""
    import grpc

    from recsys.v1 import features_pb2, features_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        for user in warm_up:
            stub.GetUserContext(features_pb2.GetUserContextRequest(user_id=user), timeout=5)
        latencies = []
        started = time.perf_counter()
        for user in picks:
            sent = time.perf_counter()
            stub.GetUserContext(features_pb2.GetUserContextRequest(user_id=user), timeout=5)
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "sequential_rps": len(picks) / elapsed,
    }


async def concurrent_rate(address: str, picks: list[str], concurrency: int) -> float:
    """Requests a second with `concurrency` calls in flight (one grpc.aio client in this process)."""
    import grpc

    from recsys.v1 import features_pb2, features_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        queue = iter(picks)

        async def caller() -> None:
            for user in queue:  # the callers share one iterator: each user is asked for once
                await stub.GetUserContext(features_pb2.GetUserContextRequest(user_id=user), timeout=30)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return len(picks) / (time.perf_counter() - started)


def event_batches(users: pd.Series, per_user: int, items: int) -> Iterator[list[Any]]:
    """RecordEvents batches of at most 1000 events (the service's default cap), every user's events in one,
    random catalogue items after the training period."""
    from recsys.v1 import common_pb2

    rng = np.random.default_rng(2)
    users_per_batch = max(1, 1000 // per_user)
    for first in range(0, len(users), users_per_batch):
        batch = users.iloc[first : first + users_per_batch].tolist()
        item_numbers = rng.integers(0, items, (len(batch), per_user))
        yield [
            common_pb2.Event(user_id=user, item_id=f"i{item}", timestamp=1_640_000_000 + n)
            for user, row in zip(batch, item_numbers.tolist(), strict=True)
            for n, item in enumerate(row)
        ]


async def record_all(address: str, users: pd.Series, per_user: int, items: int, concurrency: int) -> dict[str, Any]:
    """Every user's recorded events, through the service (as production writes them), a few batches in flight."""
    import grpc

    from recsys.v1 import features_pb2, features_pb2_grpc

    accepted = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        batches = event_batches(users, per_user, items)

        async def writer() -> None:
            nonlocal accepted
            for events in batches:
                reply = await stub.RecordEvents(features_pb2.FeatureRecordEventsRequest(events=events), timeout=120)
                accepted += reply.accepted

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"recorded_events": accepted, "record_s": elapsed, "record_events_per_s": accepted / elapsed}


def sqlite_store_state(path: Path) -> dict[str, Any]:
    """What the SQLite store holds: users with events, and the file's size (its write-ahead log included)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        users = db.execute("SELECT COUNT(*) FROM event_users").fetchone()[0]
    size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
    return {"users_with_events": int(users), "store_mib": size / 2**20}


def redis_store_state(url: str, users: pd.Series, redis_pid: int) -> dict[str, Any]:
    """What Redis holds: users whose events list exists (keys named by the shipped store), INFO memory's
    used_memory, and the server's resident memory."""
    import redis

    from services.features.adapters import RedisEventStore

    naming = RedisEventStore(url, "recsys")  # the service's default RECSYS_REDIS_PREFIX; never opened
    client = redis.Redis.from_url(url)
    try:
        present = 0
        for first in range(0, len(users), 10_000):
            present += int(client.exists(*(naming.events_key(u) for u in users.iloc[first : first + 10_000])))
        memory = client.info("memory")
        keys = int(client.dbsize())
    finally:
        client.close()
    return {
        "users_with_events": present,
        "redis_keys": keys,
        "redis_used_memory_mib": memory["used_memory"] / 2**20,
        "redis_used_memory_rss_mib": memory["used_memory_rss"] / 2**20,
        "redis_server": memory_mib(redis_pid),
    }


def serve_dict_baseline(histories: Path, port: int, max_history: int) -> None:
    """The plumbing floor: a grpc.aio server answering GetUserContext from a Python dict, no encoding, no store."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from recsys.v1 import common_pb2, features_pb2_grpc

    frame = pd.read_parquet(histories)  # sorted by user: each user's rows are one run
    users = frame["user_id"].to_numpy(dtype=object)
    items = frame["item_id"].tolist()
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds]).tolist()
    ends = np.concatenate([bounds, [len(users)]]).tolist()
    by_user = {users[a]: items[max(a, b - max_history) : b] for a, b in zip(starts, ends, strict=True)}
    del frame, users, items

    class DictFeatures(features_pb2_grpc.FeatureServiceServicer):
        async def GetUserContext(self, request, context):  # type: ignore[no-untyped-def]
            items = by_user.get(request.user_id, [])
            return common_pb2.UserContext(
                user_id=request.user_id, history=[common_pb2.HistoryEntry(item_id=i) for i in items]
            )

    async def main() -> None:
        server = grpc.aio.server()
        features_pb2_grpc.add_FeatureServiceServicer_to_server(DictFeatures(), server)
        checker = health.aio.HealthServicer()
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    asyncio.run(main())


def measure_server(
    command: list[str],
    env: dict[str, str],
    port: int,
    picks: list[str],
    warm_up: list[str],
    concurrency: int,
    before_requests: Any = None,
) -> dict[str, Any]:
    """Start to SERVING, memory when ready, optional work before the requests (recording events), then latency,
    concurrent rate, and memory after all of it (peak: VmHWM, the whole life of the process)."""
    started = time.perf_counter()
    process = start_server(command, env, port)
    result: dict[str, Any] = {"startup_s": time.perf_counter() - started}
    ready = memory_mib(process.pid)
    result["rss_ready_mib"] = ready["rss_mib"]
    address = f"127.0.0.1:{port}"
    try:
        if before_requests is not None:
            result.update(before_requests(address))
        result.update(measure_latency(address, picks, warm_up))
        result["concurrent_rps"] = asyncio.run(concurrent_rate(address, picks, concurrency))
        after = memory_mib(process.pid)
        result["rss_after_mib"] = after["rss_mib"]
        result["peak_rss_mib"] = after["peak_rss_mib"]
    finally:
        process.terminate()
        process.wait()
    return result


def latency_suite(
    data: Path, work: Path, args: argparse.Namespace, loads: dict[str, list[float]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    started = time.perf_counter()
    version = publish_features_artifact(data, work / "artifacts", args.max_history)
    print(f"published the features artefact in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    users = pd.Series(pd.read_parquet(version / "histories.parquet", columns=["user_id"])["user_id"].unique())
    picks, warm_up, coverage = sample_users(users, args.requests, args.users)
    results: dict[str, Any] = {}
    port = free_port()
    command = [sys.executable, __file__, "--phase", "dict-server", "--data", str(version / "histories.parquet")]
    command += ["--port", str(port), "--max-history", str(args.max_history)]
    results["dict baseline"] = measure_server(command, {}, port, picks, warm_up, args.concurrency)
    loads["dict baseline"] = list(os.getloadavg())

    redis_binary = shutil.which("redis-server")
    redis_port = free_port()
    redis = None
    if redis_binary:
        redis = subprocess.Popen(
            [redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    stores = {"sqlite": {"RECSYS_STORE": "sqlite", "RECSYS_STATE_DIR": str(work / "state")}}
    if redis is not None:
        stores["redis"] = {"RECSYS_STORE": "redis", "RECSYS_REDIS_URL": redis_url}
    try:
        for name, store_env in stores.items():
            port = free_port()
            env = {"RECSYS_ARTIFACTS": str(version), "RECSYS_PORT": str(port), "RECSYS_LOG_LEVEL": "WARNING"}

            def record_and_inspect(address: str, name: str = name) -> dict[str, Any]:
                # The store holds every user's recorded events, as in production after a while.
                recorded = asyncio.run(record_all(address, users, args.events_per_user, args.items, 4))
                if name == "sqlite":
                    recorded.update(sqlite_store_state(work / "state" / "events.sqlite"))
                else:
                    assert redis is not None
                    recorded.update(redis_store_state(redis_url, users, redis.pid))
                print(f"{name}: {recorded}", file=sys.stderr)
                return recorded

            results[f"features ({name})"] = measure_server(
                [sys.executable, "-m", "services.features"],
                {**env, **store_env},
                port,
                picks,
                warm_up,
                args.concurrency,
                record_and_inspect,
            )
            loads[f"features ({name})"] = list(os.getloadavg())
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
    if redis is None:
        results["features (redis)"] = "skipped: redis-server not installed"
    return results, coverage


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--max-history", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--events-per-user", type=int, default=3, help="recorded events per user, before requests")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight for the concurrent rate")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", choices=["workflow", "baseline", "dict-server"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "dict-server":
        serve_dict_baseline(args.data, args.port, args.max_history)
        return
    if args.phase is not None:
        result = (phase_workflow if args.phase == "workflow" else phase_baseline)(args.data, args.max_history)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    loads: dict[str, list[float]] = {"start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="features-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        generate_raw(work / "data", args.interactions, args.users, args.items)
        generate_s = time.perf_counter() - started
        print(f"generated {args.interactions} interactions in {generate_s:.1f}s", file=sys.stderr)
        runs: dict[str, list[dict[str, Any]]] = {"workflow": [], "baseline": []}
        for _ in range(args.repeat):
            for phase in runs:
                runs[phase].append(run_phase(phase, work / "data", args.max_history))
        loads["workflow"] = list(os.getloadavg())
        summary: dict[str, Any] = {
            "interactions": args.interactions,
            "users": args.users,
            "items": args.items,
            "repeat": args.repeat,
            "generate_s": generate_s,
        }
        for phase, results in runs.items():
            summary[phase] = {
                key: statistics.median(r[key] for r in results)
                for key in ("read_clean_s", "fit_s", "transform_s", "total_s", "peak_rss_mib")
            }
        summary["workflow_details"] = {k: v for k, v in runs["workflow"][0].items() if not k.endswith(("_s", "_mib"))}
        summary["latency"], summary["latency_sample"] = latency_suite(work / "data", work, args, loads)
    summary["load_average"] = loads

    w, b = summary["workflow"], summary["baseline"]
    print(f"\nfit + transform of {args.interactions:,} interactions (median of {args.repeat} runs, 2-core machine)")
    print(f"{'':28}{'read+clean':>12}{'fit':>8}{'transform':>11}{'total':>8}{'peak RSS':>11}")
    for name, row in (("workflow (this project)", w), ("plain pandas baseline", b)):
        print(
            f"{name:28}{row['read_clean_s']:>11.2f}s{row['fit_s']:>7.2f}s{row['transform_s']:>10.2f}s"
            f"{row['total_s']:>7.2f}s{row['peak_rss_mib']:>8.0f} MiB"
        )
    print(
        f"ratio workflow/baseline: time {w['total_s'] / b['total_s']:.2f}x, memory "
        f"{w['peak_rss_mib'] / b['peak_rss_mib']:.2f}x   (targets at 1M interactions: total < 30 s, peak < 2048 MiB)"
    )
    sample = summary["latency_sample"]
    print(
        f"\nuser-context latency over gRPC ({args.requests} sequential requests, then the same at {args.concurrency} in"
        f" flight; {sample['distinct_users']:,} distinct of the {sample['users_with_history']:,} users with a history,"
        f" {sample['lowest_id']}..{sample['highest_id']}, per tenth of the id range {sample['per_tenth_of_id_range']})"
    )
    print(
        f"{'':22}{'p50':>9}{'p99':>10}{'seq req/s':>11}{'conc req/s':>12}{'startup':>9}"
        f"{'RSS ready':>11}{'RSS after':>11}{'peak RSS':>10}"
    )
    for name, row in summary["latency"].items():
        if isinstance(row, str):
            print(f"{name:22}{row}")
        else:
            print(
                f"{name:22}{row['p50_ms']:6.2f} ms{row['p99_ms']:7.2f} ms{row['sequential_rps']:>11.0f}"
                f"{row['concurrent_rps']:>12.0f}{row['startup_s']:>8.1f}s{row['rss_ready_mib']:>7.0f} MiB"
                f"{row['rss_after_mib']:>7.0f} MiB{row['peak_rss_mib']:>6.0f} MiB"
            )
    print("(target: p99 < 5 ms; startup: process start to SERVING; RSS: the server process, from /proc)")
    for name, row in summary["latency"].items():
        if isinstance(row, dict) and "recorded_events" in row:
            line = (
                f"{name:22}{row['recorded_events']:,} events of {row['users_with_events']:,} users recorded in"
                f" {row['record_s']:.1f}s ({row['record_events_per_s']:,.0f}/s)"
            )
            if "store_mib" in row:
                line += f"; SQLite file {row['store_mib']:.0f} MiB"
            if "redis_used_memory_mib" in row:
                line += (
                    f"; Redis used_memory {row['redis_used_memory_mib']:.0f} MiB,"
                    f" server RSS {row['redis_server']['rss_mib']:.0f} MiB, {row['redis_keys']:,} keys"
                )
            print(line)
    print(
        "load average (1, 5, 15 min) after each part: "
        + ", ".join(f"{part} {' '.join(f'{x:.2f}' for x in values)}" for part, values in loads.items())
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
