"""Ranking at catalogue scale: what a 100,000-item catalogue costs the ranking stage, beside an artefact of
ml-100k's size (943 users, 1,682 items, ~100k interactions) built the same way in the same run.

Both artefacts come from generated sequence data (Zipf-popular items, half the steps continuing a "series":
the item after the previous one; trainer.demo draws step by step in Python, hours at 100k items), built on
the trainer's own code path: Workflow.fit, GRU4Rec and Caser through trainer.pipeline.train_sequence_models
(the sampled softmax is chosen past ranking.sampled_softmax_min_items, so at 100k items), the Markov chain,
a Ranker written by trainer.triton_repository.write_ranker into a published version. GRU4Rec and Caser
train for --epochs (default 1): serving cost depends on the weights' shapes, not on how well they are
trained. The blend weighs every component (one weighed 0 is left out of the ONNX graph): the whole graph.

Per artefact: the ONNX file's size; the graph in-process (onnxruntime on one thread, as the python backend
runs it) and the RSS its session adds to this process; Triton directly (tritonclient) and the ranking
service over gRPC (service -> Triton), p50/p99 for 100 and 500 candidates; the resident memory of
tritonserver (summed over its process tree: the python backend runs each model instance in its own stub
process) and of the ranking service, from /proc: VmRSS, VmHWM and Pss (shared pages split between the
processes). Both artefacts are served at once and every latency row alternates between them, --rounds
times; each figure is the median over rounds. Requests carry full histories (max_history items) for both.

    .venv/bin/python bench/ranking_scale_bench.py [--users 25000] [--items 100000] [--mean-history 20] \\
        [--epochs 1] [--requests 200] [--rounds 3] [--work DIR] [--json OUT]

The large data set defaults to 25,000 users x 20 items (500k interactions): training is most of the run and
grows with the interactions, while serving depends on the catalogue (users only size Caser's user table).
50,000 users took twice the training (GRU4Rec 3.3-5.5, Caser 9.6-10.4 min on 2 shared cores: 15-18 min in
all) for the same serving figures (ONNX 359 vs 354 MiB, tritonserver RSS 1,047 vs 1,036 MiB, equal p50s).
--work keeps the artefacts there, and a later run with the same sizes, epochs and seed serves them again
instead of training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import free_port, start_server, status_kib, tree_memory  # noqa: E402
from ranking_bench import percentiles, rank_request  # noqa: E402

from recsys.v1 import ranking_pb2_grpc  # noqa: E402
from recsys_runtime import triton_contract as contract  # noqa: E402
from recsys_runtime.artifacts import load_manifest, new_version_name, publish, resolve_version, staging_directory  # noqa: E402
from recsys_runtime.evaluation import histories_by_user  # noqa: E402
from recsys_runtime.layout import CONFIG_FILE, WORKFLOW_DIR  # noqa: E402
from recsys_runtime.models.markov import Markov  # noqa: E402
from recsys_runtime.models.ranking import COMPONENTS, Ranker  # noqa: E402
from recsys_runtime.triton_contract import ONNX_MODEL_FILE  # noqa: E402
from recsys_runtime.triton_links import link_served_version  # noqa: E402
from recsys_runtime.workflow import Workflow  # noqa: E402
from services.launcher.triton import TritonServer  # noqa: E402
from trainer.config import defaults  # noqa: E402
from trainer.pipeline import train_sequence_models  # noqa: E402
from trainer.triton_repository import write_ranker  # noqa: E402

# ml-100k's shape: 943 users, 1,682 items, 100,000 ratings.
SMALL = (943, 1682, 106)
ZIPF_EXPONENT = 1.0
SERIES_CONTINUATION = 0.5
START_TIME = 1_600_000_000
CANDIDATE_COUNTS = (100, 500)
WAYS = ("onnx in-process", "triton", "ranking service")
MIB = 1024 * 1024


# ---------------------------------------------------------------- data


def generate_sequences(n_users: int, n_items: int, mean_history: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interactions (user_id, item_id, timestamp) and the catalogue (item_id), vectorised: trainer.demo draws
    each step in a Python loop over the whole catalogue's weights, which at 100k items takes hours."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (rng.permutation(n_items) + 1.0) ** ZIPF_EXPONENT
    lengths = np.clip(rng.geometric(1.0 / mean_history, n_users), 3, max(3, n_items // 2))
    total = int(lengths.sum())
    rows = np.arange(total)
    first_row = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = rows - first_row
    drawn = rng.choice(n_items, total, p=popularity / popularity.sum())
    # A step either draws by popularity or continues the series: the item after the previous one.
    fresh = (rng.random(total) >= SERIES_CONTINUATION) | (positions == 0)
    last_fresh = np.maximum.accumulate(np.where(fresh, rows, 0))  # never crosses users: their first row is fresh
    items = (drawn[last_fresh] + (rows - last_fresh)) % n_items
    users = np.repeat(np.arange(n_users), lengths)
    starts = START_TIME + rng.integers(0, 365 * 86_400, n_users)
    item_ids = np.array([f"i{i:06d}" for i in range(n_items)], dtype=object)
    user_ids = np.array([f"u{u:06d}" for u in range(n_users)], dtype=object)
    interactions = pd.DataFrame(
        {
            "user_id": user_ids[users],
            "item_id": item_ids[items],
            "timestamp": (starts[users] + positions * 3600).astype(np.int64),
        }
    )
    return interactions, pd.DataFrame({"item_id": item_ids})


# ---------------------------------------------------------------- the artefact


@dataclass
class Built:
    name: str
    version_dir: Path
    workflow: Workflow
    histories: dict[int, np.ndarray]
    facts: dict[str, Any]


def encoded_data(
    n_users: int, n_items: int, mean_history: int, seed: int, workflow: Workflow | None = None
) -> tuple[Workflow, pd.DataFrame, int]:
    """The generated data encoded by a workflow (fitted here unless given): (workflow, encoded, interactions)."""
    interactions, catalogue = generate_sequences(n_users, n_items, mean_history, seed)
    if workflow is None:
        config = defaults()
        workflow = Workflow.fit(
            interactions,
            config["workflow"]["max_history"],
            config["data"]["min_user_count"],
            config["data"]["min_item_count"],
            items=catalogue,
            options=config["workflow"],
        )
    return workflow, workflow.encode_interactions(interactions), len(interactions)


def build_artefact(name: str, root: Path, shape: dict[str, int]) -> Built:
    """Generated data -> workflow -> GRU4Rec, Caser, Markov -> Ranker -> a published version under root.
    A version already there, built with the same shape, is served again instead."""
    size = (shape["users"], shape["items"], shape["mean_history"], shape["seed"])
    try:
        version_dir = resolve_version(root)
        facts = load_manifest(version_dir, verify=False)["report"]
    except Exception:  # noqa: BLE001 - nothing (usable) there: build it
        facts = {}
    if facts.get("shape") == shape:
        workflow = Workflow.load(version_dir / WORKFLOW_DIR)
        _, encoded, _ = encoded_data(*size, workflow=workflow)
        print(f"reusing {name}: {version_dir}", flush=True)
        return Built(name, version_dir, workflow, histories_by_user(encoded), facts)

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    workflow, encoded, n_interactions = encoded_data(*size)
    histories = histories_by_user(encoded)
    seconds["data_and_workflow"] = time.perf_counter() - started

    config = defaults()
    config["gru4rec"]["epochs"] = shape["epochs"]
    config["caser"]["epochs"] = shape["epochs"]
    started = time.perf_counter()
    gru4rec, caser, _, training = train_sequence_models(histories, workflow, config)
    seconds["sequence_models"] = time.perf_counter() - started

    started = time.perf_counter()
    known = encoded[encoded["user_index"] > 0]  # as trainer.pipeline.fit_models: the OOV user invents nothing
    markov_config = config["markov"]
    markov = Markov.fit(
        known["user_index"].to_numpy(),
        known["item_index"].to_numpy(),
        workflow.items.size,
        markov_config["neighbours"],
        markov_config["order"],
        markov_config["recency_decay"],
    )
    seconds["markov"] = time.perf_counter() - started
    ranker = Ranker(markov, gru4rec, caser, {component: 1.0 for component in COMPONENTS})

    started = time.perf_counter()
    version = new_version_name()
    with staging_directory(root, version) as staging:
        workflow.save(staging / WORKFLOW_DIR)
        model_dir = write_ranker(staging / contract.REPOSITORY_DIR, ranker, config["serving"]["triton_cpu_instances"])
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True))
        seconds["write_ranker"] = time.perf_counter() - started
        facts = {
            "shape": shape,
            "users": len(workflow.users),
            "items": len(workflow.items),
            "interactions": n_interactions,
            "markov_neighbours": int(markov.transitions.indices.shape[1]),
            "softmax": {model: entry["softmax"] for model, entry in training.items()},
            "training_s": {model: entry["seconds"] for model, entry in training.items()},
            "build_s": {stage: round(value, 1) for stage, value in seconds.items()},
            "onnx_mib": (model_dir / ONNX_MODEL_FILE).stat().st_size / MIB,
            "version_dir_mib": sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()) / MIB,
        }
        link_served_version(root, version)
        version_dir = publish(staging, root, version, {"config": config, "report": facts})
    print(f"built {name}: {json.dumps(facts)}", flush=True)
    return Built(name, version_dir, workflow, histories, facts)


def own_rss_mib() -> float:
    return status_kib(os.getpid(), ("VmRSS",))["VmRSS"] / 1024


# ---------------------------------------------------------------- serving


Case = tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]


def request_cases(built: Built, n: int, count: int, rng: np.random.Generator) -> list[Case]:
    """(user id, history ids, history indices, candidate indices, candidate scores) for `count` requests.

    Users with a full history (max_history items) only: the GRU's cost grows with the history, and the two
    data sets' mean histories differ, so both artefacts are asked the same shapes and differ only in size."""
    workflow = built.workflow
    known = sorted(u for u in built.histories if u > 0)
    longest = max(min(len(built.histories[u]), workflow.max_history) for u in known)
    users = np.array([u for u in known if len(built.histories[u]) >= longest])
    cases = []
    for user in rng.choice(users, count):
        history = built.histories[int(user)][-workflow.max_history :].astype(np.int32)
        candidates = rng.choice(np.arange(1, workflow.items.size), n, replace=False).astype(np.int32)
        scores = np.sort(rng.random(n).astype(np.float32))[::-1].copy()
        user_id = str(workflow.users.ids[int(user) - 1])
        cases.append((user_id, list(workflow.items.decode(history)), history, candidates, scores))
    return cases


@dataclass
class Served:
    """One artefact served three ways, with a caller per way and candidate count."""

    calls: dict[str, Callable[[int], object]]
    memory: dict[str, Any]
    triton_pid: int
    service_pid: int
    triton_load_s: float


@contextmanager
def serve(built: Built, requests: int, seed: int, work: Path) -> Iterator[Served]:
    """The graph in this process, and Triton with the ranking service in front, as ranking_bench runs them."""
    import grpc
    import onnxruntime as ort
    import tritonclient.grpc as triton_grpc

    workflow = built.workflow
    rng = np.random.default_rng(seed)
    cases = {n: request_cases(built, n, requests, rng) for n in CANDIDATE_COUNTS}
    memory: dict[str, Any] = {}

    model_dir = built.version_dir / contract.REPOSITORY_DIR / contract.RANKER_MODEL / "1"
    before = own_rss_mib()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / ONNX_MODEL_FILE), options, providers=["CPUExecutionProvider"])
    memory["onnxruntime_session_rss_added_mib"] = own_rss_mib() - before

    served = contract.served_model_name(built.version_dir.name)
    triton = TritonServer(
        built.version_dir.parent / contract.SERVING_REPOSITORY_DIR,
        free_port(),
        work / f"triton-{built.version_dir.name}.log",
        models=[served],
    )
    with ExitStack() as stack:
        started = time.perf_counter()
        triton.start()
        stack.callback(triton.stop)
        triton.wait_ready([served], 600)
        triton_load_s = time.perf_counter() - started
        assert triton.process is not None
        memory["triton_loaded"] = tree_memory(triton.process.pid)
        port = free_port()
        env = {
            "RECSYS_ARTIFACTS": str(built.version_dir),
            "RECSYS_PORT": str(port),
            "RECSYS_TRITON_ADDR": triton.address,
            "RECSYS_LOG_LEVEL": "WARNING",
        }
        service = start_server([sys.executable, "-m", "services.ranking"], env, port)
        stack.callback(service.wait)
        stack.callback(service.terminate)
        memory["service_loaded"] = tree_memory(service.pid)
        client = triton_grpc.InferenceServerClient(triton.address)
        stack.callback(client.close)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stack.callback(channel.close)
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        calls: dict[str, Callable[[int], object]] = {}
        for n in CANDIDATE_COUNTS:

            def onnx_in_process(i: int, n: int = n) -> object:
                user, _, history, candidates, scores = cases[n][i]
                feeds = {
                    contract.HISTORY: contract.pad_to_bucket(
                        history, contract.HISTORY_BUCKET, front=True, limit=workflow.max_history
                    )[None, :],
                    contract.USER: workflow.users.encode([user]).astype(np.int32)[None, :],
                    contract.CANDIDATES: contract.pad_to_bucket(candidates, contract.CANDIDATE_BUCKET)[None, :],
                    contract.CANDIDATE_SCORES: contract.pad_to_bucket(scores, contract.CANDIDATE_BUCKET)[None, :],
                }
                return session.run([contract.SCORES], feeds)

            def on_triton(i: int, n: int = n) -> object:
                user, _, history, candidates, scores = cases[n][i]
                inputs = []
                for name, array in (
                    (contract.HISTORY, history),
                    (contract.USER, workflow.users.encode([user]).astype(np.int32)),
                    (contract.CANDIDATES, candidates),
                    (contract.CANDIDATE_SCORES, scores),
                ):
                    tensor = triton_grpc.InferInput(name, [1, len(array)], contract.wire_type(contract.INPUTS[name][0]))
                    tensor.set_data_from_numpy(array[None, :])
                    inputs.append(tensor)
                return client.infer(served, inputs)

            def through_service(i: int, n: int = n) -> object:
                user, history_ids, _, candidates, scores = cases[n][i]
                request = rank_request(user, history_ids, workflow.items.decode(candidates), scores)
                return stub.Rank(request, timeout=5)

            calls[f"{n} onnx in-process"] = onnx_in_process
            calls[f"{n} triton"] = on_triton
            calls[f"{n} ranking service"] = through_service
        yield Served(calls, memory, triton.process.pid, service.pid, triton_load_s)


# ---------------------------------------------------------------- report


def table(small: dict[str, Any], large: dict[str, Any]) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = [
        ("items", small["items"], large["items"]),
        ("users", small["users"], large["users"]),
        ("interactions", small["interactions"], large["interactions"]),
        ("GRU4Rec training s", small["training_s"]["gru4rec"], large["training_s"]["gru4rec"]),
        ("Caser training s", small["training_s"]["caser"], large["training_s"]["caser"]),
        ("ONNX file MiB", small["onnx_mib"], large["onnx_mib"]),
        ("version directory MiB", small["version_dir_mib"], large["version_dir_mib"]),
        (
            "onnxruntime session RSS added MiB",
            small["memory"]["onnxruntime_session_rss_added_mib"],
            large["memory"]["onnxruntime_session_rss_added_mib"],
        ),
        ("triton start to ready s", small["triton_load_s"], large["triton_load_s"]),
    ]
    for n in CANDIDATE_COUNTS:
        for way in WAYS:
            for stat in ("p50_ms", "p99_ms"):
                key = f"{n} {way}"
                rows.append(
                    (f"{n} cand. {way} {stat[:3]} ms", small["latency"][key][stat], large["latency"][key][stat])
                )
    for process, label in (("triton", "tritonserver tree"), ("service", "ranking service")):
        for moment in ("loaded", "after_requests"):
            for stat in ("VmRSS", "VmHWM", "Pss"):
                key = f"{process}_{moment}"
                rows.append(
                    (
                        f"{label} {moment.replace('_', ' ')} {stat} MiB",
                        small["memory"][key][stat],
                        large["memory"][key][stat],
                    )
                )
    processes = [result["memory"]["triton_loaded"]["processes"] for result in (small, large)]
    rows.append(("tritonserver tree processes", processes[0], processes[1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=25_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--mean-history", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1, help="GRU4Rec and Caser epochs (serving cost: shapes)")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per latency row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, help="keep (and reuse) the artefacts here; default: a temporary one")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    load: dict[str, tuple[float, float, float]] = {"start": os.getloadavg()}
    shapes = {
        "ml-100k size": (*SMALL, args.seed),
        f"{args.items // 1000}k items": (args.users, args.items, args.mean_history, args.seed),
    }
    with ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ranking-scale-")))
        built = {
            name: build_artefact(
                name,
                work / f"{users}x{items}x{mean}",
                {"users": users, "items": items, "mean_history": mean, "seed": seed, "epochs": args.epochs},
            )
            for name, (users, items, mean, seed) in shapes.items()
        }
        load["built"] = os.getloadavg()
        servers = {name: stack.enter_context(serve(a, args.requests, args.seed, work)) for name, a in built.items()}
        samples: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in built}
        for _ in range(args.rounds):
            # Row by row, the two artefacts one after the other: both meet the same moments of a shared machine.
            for n in CANDIDATE_COUNTS:
                for way in WAYS:
                    for name, served in servers.items():
                        row = percentiles(served.calls[f"{n} {way}"], args.requests)
                        samples[name].setdefault(f"{n} {way}", []).append(row)
        load["measured"] = os.getloadavg()
        results: dict[str, Any] = {}
        for name, served in servers.items():
            served.memory["triton_after_requests"] = tree_memory(served.triton_pid)
            served.memory["service_after_requests"] = tree_memory(served.service_pid)
            latency = {
                key: {stat: statistics.median(r[stat] for r in rounds) for stat in ("p50_ms", "p99_ms")}
                for key, rounds in samples[name].items()
            }
            results[name] = {
                **built[name].facts,
                "triton_load_s": served.triton_load_s,
                "latency": latency,
                "latency_rounds": samples[name],
                "memory": served.memory,
            }
    small_name, large_name = list(results)
    print(
        f"\nranking stage at catalogue scale; {args.requests} sequential requests per latency row, median of "
        f"{args.rounds} rounds; GRU4Rec/Caser trained {args.epochs} epoch(s); 2-core machine"
    )
    print(f"{'':44}{small_name:>14}{large_name:>14}{'ratio':>9}")
    for label, small_value, large_value in table(results[small_name], results[large_name]):
        ratio = f"{large_value / small_value:8.1f}x" if small_value else ""
        print(f"{label:44}{small_value:14.2f}{large_value:14.2f}{ratio:>9}")
    print(f"softmax chosen: { {name: results[name]['softmax'] for name in results} }")
    print("load average (1, 5, 15 min): " + ", ".join(f"{k} {v[0]:.1f} {v[1]:.1f} {v[2]:.1f}" for k, v in load.items()))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "load_average": load}
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
