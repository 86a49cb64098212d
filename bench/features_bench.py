"""Feature preprocessing benchmark: the fitted workflow on a generated 1M-interaction data set, and the
features service's user-context latency over gRPC with SQLite and with Redis, each beside a plain
pandas / dict baseline measured in the same run.

    .venv/bin/python bench/features_bench.py [--interactions 1000000] [--repeat 3] [--requests 3000]

Every measured phase runs in its own process, so peak memory (ru_maxrss) is that phase's alone.
Prints a table and writes the numbers as JSON (--json PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import free_port, start_server  # noqa: E402

# ---------------------------------------------------------------- data


def generate_raw(directory: Path, interactions: int, users: int, items: int, seed: int = 0) -> dict[str, Path]:
    """Zipf-popular items, skewed user activity, attributes of every kind, and 0.1% malformed rows."""
    rng = np.random.default_rng(seed)
    item_weights = 1.0 / np.arange(1, items + 1) ** 0.9
    item_weights /= item_weights.sum()
    user_weights = rng.gamma(0.7, 1.0, users)
    user_weights /= user_weights.sum()
    frame = pd.DataFrame(
        {
            "user_id": np.char.add("u", rng.choice(users, interactions, p=user_weights).astype(str)),
            "item_id": np.char.add("i", rng.choice(items, interactions, p=item_weights).astype(str)),
            "timestamp": rng.integers(1_600_000_000, 1_631_536_000, interactions),
            "rating": rng.integers(1, 6, interactions),
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.csv" for name in ("interactions", "items", "users")}
    frame.to_csv(paths["interactions"], index=False)
    bad = max(1, interactions // 1000)
    with paths["interactions"].open("a") as handle:  # malformed rows the cleaning must count
        for n in range(bad):
            handle.write(("u1,,1600000000,3\n", "u1,i1,yesterday,3\n", "u1,i1\n", "u1,i1,1600000000,x\n")[n % 4])
    genres = np.array(["action", "comedy", "drama", "horror", "romance", "scifi", "animation", "crime"])
    pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(items)],
            "title": [f"The {genres[i % 8]} of item {i}" for i in range(items)],
            "genres": ["|".join(genres[rng.choice(8, rng.integers(1, 4), replace=False)]) for _ in range(items)],
            "year": rng.integers(1950, 2022, items).astype(str),
        }
    ).to_csv(paths["items"], index=False)
    pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(users)],
            "age": rng.integers(16, 80, users).astype(str),
            "gender": rng.choice(["f", "m", "x"], users),
            "country": rng.choice(["de", "fr", "es", "it", "uk", "us"], users),
            "zip": [f"{z:05d}" for z in rng.integers(0, 99_999, users)],
        }
    ).to_csv(paths["users"], index=False)
    return paths


# ---------------------------------------------------------------- phases run in child processes


def width(encoded: Any) -> int:
    """Columns of an encoded attribute table, all kinds together."""
    return int(
        sum(block.shape[1] for block in (encoded.categorical, encoded.numeric, encoded.multi_hot, encoded.tokens))
    )


def phase_workflow(data: Path, max_history: int) -> dict[str, Any]:
    """The project's path: read + clean with a quality report, fit, transform everything."""
    from trainer.data import load_csvs
    from trainer.workflow import Workflow

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
    from trainer import artifacts
    from trainer.data import load_csvs
    from trainer.layout import CATALOG_DIR, HISTORIES_FILE, WORKFLOW_DIR
    from trainer.workflow import Workflow

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


def measure_latency(address: str, users: list[str], requests: int) -> dict[str, float]:
    import grpc

    from recsys.v1 import features_pb2, features_pb2_grpc

    rng = np.random.default_rng(1)
    picks = [users[i] for i in rng.integers(0, len(users), requests)]
    with grpc.insecure_channel(address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        for user in picks[:200]:  # warm-up
            stub.GetUserContext(features_pb2.GetUserContextRequest(user_id=user), timeout=5)
        latencies = []
        for user in picks:
            started = time.perf_counter()
            stub.GetUserContext(features_pb2.GetUserContextRequest(user_id=user), timeout=5)
            latencies.append(time.perf_counter() - started)
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def record_events(address: str, users: list[str], per_user: int) -> None:
    import grpc

    from recsys.v1 import common_pb2, features_pb2, features_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        for user in users:
            events = [
                common_pb2.Event(user_id=user, item_id=f"i{n}", timestamp=1_640_000_000 + n) for n in range(per_user)
            ]
            stub.RecordEvents(features_pb2.FeatureRecordEventsRequest(events=events), timeout=10)


def serve_dict_baseline(histories: Path, port: int, max_history: int) -> None:
    """The plumbing floor: a grpc.aio server answering GetUserContext from a Python dict, no encoding, no store."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from recsys.v1 import common_pb2, features_pb2_grpc

    frame = pd.read_parquet(histories)
    by_user = {user: group["item_id"].tolist()[-max_history:] for user, group in frame.groupby("user_id", sort=False)}

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


def latency_suite(data: Path, work: Path, requests: int, max_history: int) -> dict[str, Any]:
    version = publish_features_artifact(data, work / "artifacts", max_history)
    users = pd.read_parquet(version / "histories.parquet", columns=["user_id"])["user_id"].unique().tolist()
    results: dict[str, Any] = {}
    port = free_port()
    baseline = start_server(
        [
            sys.executable,
            __file__,
            "--phase",
            "dict-server",
            "--data",
            str(version / "histories.parquet"),
            "--port",
            str(port),
            "--max-history",
            str(max_history),
        ],
        {},
        port,
    )
    try:
        results["dict baseline"] = measure_latency(f"127.0.0.1:{port}", users, requests)
    finally:
        baseline.terminate()
        baseline.wait()

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
    stores = {"sqlite": {"RECSYS_STORE": "sqlite", "RECSYS_STATE_DIR": str(work / "state")}}
    if redis is not None:
        stores["redis"] = {"RECSYS_STORE": "redis", "RECSYS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    try:
        for name, store_env in stores.items():
            port = free_port()
            env = {
                "RECSYS_ARTIFACTS": str(version),
                "RECSYS_PORT": str(port),
                "RECSYS_LOG_LEVEL": "WARNING",
                **store_env,
            }
            service = start_server([sys.executable, "-m", "services.features"], env, port)
            try:
                address = f"127.0.0.1:{port}"
                record_events(address, users[:1000], 10)  # the store holds recorded events, as in production
                results[f"features ({name})"] = measure_latency(address, users, requests)
            finally:
                service.terminate()
                service.wait()
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
    if redis is None:
        results["features (redis)"] = "skipped: redis-server not installed"
    return results


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--max-history", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
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

    with tempfile.TemporaryDirectory(prefix="features-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        generate_raw(work / "data", args.interactions, args.users, args.items)
        print(f"generated {args.interactions} interactions in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        runs: dict[str, list[dict[str, Any]]] = {"workflow": [], "baseline": []}
        for _ in range(args.repeat):
            for phase in runs:
                runs[phase].append(run_phase(phase, work / "data", args.max_history))
        summary: dict[str, Any] = {"interactions": args.interactions, "repeat": args.repeat}
        for phase, results in runs.items():
            summary[phase] = {
                key: statistics.median(r[key] for r in results)
                for key in ("read_clean_s", "fit_s", "transform_s", "total_s", "peak_rss_mib")
            }
        summary["workflow_details"] = {k: v for k, v in runs["workflow"][0].items() if not k.endswith(("_s", "_mib"))}
        summary["latency"] = latency_suite(work / "data", work, args.requests, args.max_history)

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
        f"{w['peak_rss_mib'] / b['peak_rss_mib']:.2f}x   (targets: total < 30 s, peak < 2048 MiB)"
    )
    print(f"\nuser-context latency over gRPC ({args.requests} sequential requests, known users)")
    for name, row in summary["latency"].items():
        if isinstance(row, str):
            print(f"{name:28}{row}")
        else:
            print(f"{name:28}p50 {row['p50_ms']:6.2f} ms   p99 {row['p99_ms']:6.2f} ms")
    print("(target: p99 < 5 ms)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
