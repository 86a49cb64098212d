"""Ranking benchmark: the ranker (GRU4Rec + Caser + Markov + candidate score) for 10, 100 and 500 candidates,
called four ways in the same run: in-process (numpy, the trainer's ranker), its ONNX graph in-process
(onnxruntime on one CPU thread: what Triton serves, on CPU in the python backend and on GPUs), on Triton
directly (tritonclient), and through the ranking service over gRPC (service -> Triton). Every row is also a
ratio to in-process numpy.

    .venv/bin/python bench/ranking_bench.py --artifacts ARTIFACTS [--requests 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import free_port, start_server  # noqa: E402

from recsys.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc  # noqa: E402
from recsys_runtime import triton_contract as contract  # noqa: E402
from recsys_runtime.artifacts import resolve_version  # noqa: E402
from recsys_runtime.models.ranking import Ranker  # noqa: E402
from recsys_runtime.triton_contract import ONNX_MODEL_FILE  # noqa: E402
from recsys_runtime.triton_links import link_served_version  # noqa: E402
from recsys_runtime.workflow import Workflow  # noqa: E402
from services.launcher.triton import TritonServer  # noqa: E402
from trainer.triton_repository import MODEL_VERSION  # noqa: E402


def rank_request(
    user: str, history_ids: Iterable[str], candidate_ids: Iterable[object], scores: Iterable[float]
) -> ranking_pb2.RankRequest:
    """The ranking service's request for a user's history and scored candidates (ids, as clients send them)."""
    context = common_pb2.UserContext(user_id=user, history=[common_pb2.HistoryEntry(item_id=h) for h in history_ids])
    candidates = [
        common_pb2.ScoredItem(item_id=str(c), score=float(s)) for c, s in zip(candidate_ids, scores, strict=True)
    ]
    return ranking_pb2.RankRequest(context=context, candidates=candidates)


def percentiles(function: Callable[[int], object], count: int) -> dict[str, float]:
    for i in range(min(50, count)):  # warm-up
        function(i)
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        function(i)
        latencies.append(time.perf_counter() - started)
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import grpc
    import tritonclient.grpc as triton_grpc

    version = resolve_version(args.artifacts)
    workflow = Workflow.load(version / "workflow")
    import onnxruntime as ort

    model_dir = version / contract.REPOSITORY_DIR / contract.RANKER_MODEL / MODEL_VERSION
    ranker = Ranker.load(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    onnx_session = ort.InferenceSession(str(model_dir / ONNX_MODEL_FILE), options, providers=["CPUExecutionProvider"])
    histories = pd.read_parquet(version / "histories.parquet")
    users = [(str(u), g["item_id"].astype(str).tolist()[-50:]) for u, g in histories.groupby("user_id", sort=False)]
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ranking-bench-") as tmp:
        # The suite's way: the root's serving repository, this version's ranker loaded by name.
        served = contract.served_model_name(version.name)
        link_served_version(version.parent, version.name)
        triton = TritonServer(
            version.parent / contract.SERVING_REPOSITORY_DIR, free_port(), Path(tmp) / "triton.log", models=[served]
        )
        triton.start()
        service = None
        try:
            triton.wait_ready([served], 120)
            port = free_port()
            env = {
                "RECSYS_ARTIFACTS": str(version),
                "RECSYS_PORT": str(port),
                "RECSYS_TRITON_ADDR": triton.address,
                "RECSYS_LOG_LEVEL": "WARNING",
            }
            service = start_server([sys.executable, "-m", "services.ranking"], env, port)
            client = triton_grpc.InferenceServerClient(triton.address)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            for n in (10, 100, 500):
                cases = []
                for i in range(args.requests):
                    user, history = users[i % len(users)]
                    candidates = rng.choice(np.arange(1, workflow.items.size), n, replace=False).astype(np.int32)
                    scores = np.sort(rng.random(n).astype(np.float32))[::-1].copy()
                    cases.append((user, history, workflow.items.encode(history), candidates, scores))

                def in_process(i: int, cases: list = cases) -> object:  # type: ignore[type-arg]
                    user, _, history, candidates, scores = cases[i]
                    return ranker.score(history, int(workflow.users.encode([user])[0]), candidates, scores)

                def onnx_in_process(i: int, cases: list = cases) -> object:  # type: ignore[type-arg]
                    user, _, history, candidates, scores = cases[i]
                    feeds = {
                        contract.HISTORY: contract.pad_to_bucket(
                            history.astype(np.int32), contract.HISTORY_BUCKET, front=True, limit=workflow.max_history
                        )[None, :],
                        contract.USER: workflow.users.encode([user]).astype(np.int32)[None, :],
                        contract.CANDIDATES: contract.pad_to_bucket(candidates, contract.CANDIDATE_BUCKET)[None, :],
                        contract.CANDIDATE_SCORES: contract.pad_to_bucket(scores, contract.CANDIDATE_BUCKET)[None, :],
                    }
                    return onnx_session.run([contract.SCORES], feeds)

                def on_triton(i: int, cases: list = cases) -> object:  # type: ignore[type-arg]
                    user, _, history, candidates, scores = cases[i]
                    inputs = []
                    for name, array in (
                        (contract.HISTORY, history.astype(np.int32)),
                        (contract.USER, workflow.users.encode([user]).astype(np.int32)),
                        (contract.CANDIDATES, candidates),
                        (contract.CANDIDATE_SCORES, scores),
                    ):
                        tensor = triton_grpc.InferInput(
                            name, [1, len(array)], contract.wire_type(contract.INPUTS[name][0])
                        )
                        tensor.set_data_from_numpy(array[None, :])
                        inputs.append(tensor)
                    return client.infer(served, inputs)

                def through_service(i: int, cases: list = cases) -> object:  # type: ignore[type-arg]
                    user, history_ids, _, candidates, scores = cases[i]
                    request = rank_request(user, history_ids, workflow.items.decode(candidates), scores)
                    return stub.Rank(request, timeout=5)

                results[f"{n} in-process"] = percentiles(in_process, args.requests)
                results[f"{n} onnx in-process"] = percentiles(onnx_in_process, args.requests)
                results[f"{n} triton"] = percentiles(on_triton, args.requests)
                results[f"{n} ranking service"] = percentiles(through_service, args.requests)
            channel.close()
            client.close()
        finally:
            if service is not None:
                service.terminate()
                service.wait()
            triton.stop()
    print(f"\nranking latency, {args.requests} sequential requests per row (2-core machine)")
    for n in (10, 100, 500):
        base = results[f"{n} in-process"]
        for way in ("in-process", "onnx in-process", "triton", "ranking service"):
            row = results[f"{n} {way}"]
            print(
                f"{n:4d} candidates  {way:16}p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms"
                f"   ({row['p50_ms'] / base['p50_ms']:.1f}x in-process p50)"
            )
    print("(target: p99 < 15 ms at 500 candidates through Triton)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
