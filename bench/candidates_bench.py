"""Candidate-stage benchmark: GetCandidates latency over gRPC at N=200, exact scoring beside the approximate
item index (faiss IVF-Flat) in the same run, and the index's recall@200 against exact scoring.

    .venv/bin/python bench/candidates_bench.py [--sizes 100000 1000000] [--artifacts ML100K_ARTIFACTS]

Catalogues of 100k and 1M items are generated: an autoencoder's weights with topic structure (items of a
topic have nearby vectors, as trained embeddings do), users whose histories come from one to three topics.
With --artifacts, the real ml-100k model is measured too (exact scoring; its catalogue is far below the
index threshold).
"""

from __future__ import annotations

import argparse
import json
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

from recsys.v1 import candidates_pb2, candidates_pb2_grpc, common_pb2  # noqa: E402
from recsys_runtime import artifacts  # noqa: E402
from recsys_runtime.layout import MODELS_DIR, WORKFLOW_DIR  # noqa: E402
from recsys_runtime.models.autoencoder import AutoencoderScorer  # noqa: E402
from recsys_runtime.models.candidates import item_vectors  # noqa: E402
from recsys_runtime.models.item_index import ItemIndex  # noqa: E402
from recsys_runtime.models.popularity import save_popularity  # noqa: E402
from recsys_runtime.workflow import Vocabulary, Workflow  # noqa: E402
from trainer.config import load_config  # noqa: E402

HIDDEN, LATENT, TOPICS = 128, 32, 500


def generated_catalogue(n_items: int, seed: int = 0) -> tuple[AutoencoderScorer, np.ndarray, np.ndarray]:
    """Weights shaped like a trained Mult-VAE with topic structure; item topics; popularity."""
    rng = np.random.default_rng(seed)
    size = n_items + 1  # index 0 is the out-of-vocabulary bucket
    topic = rng.integers(0, TOPICS, size)
    centres = rng.standard_normal((TOPICS, HIDDEN)).astype(np.float32)
    encoder_in = (centres[topic] + 0.5 * rng.standard_normal((size, HIDDEN))).astype(np.float32) * 0.3
    decoder_out = (centres[topic] + 0.5 * rng.standard_normal((size, HIDDEN))).astype(np.float32).T * 0.3
    scorer = AutoencoderScorer(
        encoder=[
            (encoder_in, np.zeros(HIDDEN, np.float32)),
            (
                (rng.standard_normal((HIDDEN, LATENT)) / np.sqrt(HIDDEN)).astype(np.float32),
                np.zeros(LATENT, np.float32),
            ),
        ],
        decoder=[
            (
                (rng.standard_normal((LATENT, HIDDEN)) / np.sqrt(LATENT)).astype(np.float32),
                np.zeros(HIDDEN, np.float32),
            ),
            (np.ascontiguousarray(decoder_out), (0.1 * rng.standard_normal(size)).astype(np.float32)),
        ],
        meta={"variant": "vae", "hidden": [HIDDEN], "latent": LATENT, "generated": True},
    )
    popularity = (rng.zipf(1.3, size).clip(1, 100_000)).astype(np.float32)
    popularity[0] = 0.0
    return scorer, topic, popularity


def publish(root: Path, n_items: int, scorer: AutoencoderScorer, popularity: np.ndarray, with_index: bool) -> Path:
    config = load_config()
    config["candidates"]["ann_min_items"] = 1 if with_index else n_items + 10
    ids = pd.Index([f"i{i:07d}" for i in range(n_items)], dtype=object)
    workflow = Workflow(Vocabulary(pd.Index(["u0"], dtype=object)), Vocabulary(ids), 50)
    version = artifacts.new_version_name()
    with artifacts.staging_directory(root, version) as staging:
        workflow.save(staging / WORKFLOW_DIR)
        models = staging / MODELS_DIR
        models.mkdir()
        save_popularity(models, popularity)
        scorer.save(models)
        if with_index:
            started = time.perf_counter()
            ItemIndex.build(item_vectors(scorer), config["candidates"]["ann_nprobe"]).save(models / "autoencoder")
            print(f"  index over {n_items:,} items built in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        return artifacts.publish(staging, root, version, {"config": config, "report": {}})


def contexts(topic: np.ndarray, count: int, seed: int = 1) -> list[common_pb2.UserContext]:
    rng = np.random.default_rng(seed)
    by_topic = pd.Series(np.arange(len(topic))).groupby(topic).apply(lambda s: s.to_numpy())
    out = []
    for user in range(count):
        topics = rng.choice(TOPICS, rng.integers(1, 4), replace=False)
        history = np.concatenate([rng.choice(by_topic[t], 10) for t in topics])
        history = history[history > 0][:30]
        ids = [f"i{i - 1:07d}" for i in history]
        out.append(
            common_pb2.UserContext(
                user_id=f"bench-{user}",
                known_user=True,
                seen_item_ids=ids,
                history=[common_pb2.HistoryEntry(item_id=i, timestamp=1_700_000_000 + n) for n, i in enumerate(ids)],
            )
        )
    return out


def serve_candidates(version: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {"RECSYS_ARTIFACTS": str(version), "RECSYS_PORT": str(port), "RECSYS_LOG_LEVEL": "WARNING"}
    return start_server([sys.executable, "-m", "services.candidates"], env, port), f"127.0.0.1:{port}"


def measure(version: Path, users: list[common_pb2.UserContext], n: int) -> tuple[dict[str, float], list[list[str]]]:
    import grpc

    process, address = serve_candidates(version)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = candidates_pb2_grpc.CandidateServiceStub(channel)
            for context in users[:50]:  # warm-up
                stub.GetCandidates(candidates_pb2.GetCandidatesRequest(context=context, n=n), timeout=10)
            latencies, lists = [], []
            for context in users:
                started = time.perf_counter()
                reply = stub.GetCandidates(candidates_pb2.GetCandidatesRequest(context=context, n=n), timeout=10)
                latencies.append(time.perf_counter() - started)
                lists.append([item.item_id for item in reply.items])
    finally:
        process.terminate()
        process.wait()
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}, lists


def recall(approximate: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(approximate, exact, strict=True)]))


def ml100k_contexts(version: Path, count: int) -> list[common_pb2.UserContext]:
    frame = pd.read_parquet(version / "histories.parquet")
    out = []
    for user, group in list(frame.groupby("user_id", sort=False))[:count]:
        ids = group["item_id"].astype(str).tolist()
        out.append(
            common_pb2.UserContext(
                user_id=str(user),
                known_user=True,
                seen_item_ids=ids,
                history=[common_pb2.HistoryEntry(item_id=i) for i in ids[-50:]],
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--artifacts", type=Path, help="ml-100k artefacts (recsys train on recbench's split)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.artifacts is not None:
        version = artifacts.resolve_version(args.artifacts)
        latency, _ = measure(version, ml100k_contexts(version, args.requests), args.n)
        results["ml-100k (exact)"] = latency
    with tempfile.TemporaryDirectory(prefix="candidates-bench-") as tmp:
        for size in args.sizes:
            print(f"catalogue of {size:,} items", file=sys.stderr)
            scorer, topic, popularity = generated_catalogue(size)
            users = contexts(topic, args.requests)
            exact_version = publish(Path(tmp) / f"exact-{size}", size, scorer, popularity, with_index=False)
            index_version = publish(Path(tmp) / f"index-{size}", size, scorer, popularity, with_index=True)
            del scorer
            exact, exact_lists = measure(exact_version, users, args.n)
            approximate, approximate_lists = measure(index_version, users, args.n)
            results[f"{size:,} items, exact"] = exact
            results[f"{size:,} items, index"] = {
                **approximate,
                f"recall@{args.n}": recall(approximate_lists, exact_lists),
            }
    print(f"\nGetCandidates over gRPC, N={args.n}, {args.requests} sequential requests (2-core machine)")
    for name, row in results.items():
        extra = f"   recall@{args.n} vs exact {row[f'recall@{args.n}']:.3f}" if f"recall@{args.n}" in row else ""
        print(f"{name:28}p50 {row['p50_ms']:7.2f} ms   p99 {row['p99_ms']:7.2f} ms{extra}")
    print("(targets: p99 < 10 ms at 100k, < 20 ms at 1M with the index; recall@200 >= 0.95)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
