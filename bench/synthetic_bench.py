"""Synthetic-data benchmark: streaming COUNT synthetic interactions (with their users) from the synthetic
service over gRPC, beside generating the same rows in-process in the same run (the generator alone, no
protobuf, no network): rows/s of both, their ratio, and the service's peak memory (VmHWM) before and
after the stream.

    .venv/bin/python bench/synthetic_bench.py --artifacts ARTIFACTS [--count 1000000] [--chunk 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import free_port, start_server  # noqa: E402

from recsys.v1 import synthetic_pb2, synthetic_pb2_grpc  # noqa: E402
from recsys_runtime.artifacts import resolve_version  # noqa: E402
from recsys_runtime.layout import WORKFLOW_DIR  # noqa: E402
from recsys_runtime.synthesis import GAN_DIR, Synthesis  # noqa: E402
from recsys_runtime.workflow import Workflow  # noqa: E402


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import grpc

    version = resolve_version(args.artifacts)
    synthesis = Synthesis.load(version / GAN_DIR, Workflow.load(version / WORKFLOW_DIR))
    started = time.perf_counter()
    in_process = sum(len(rows) for _, rows in synthesis.generate_interactions(args.count, 1, {}, args.chunk))
    in_process_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="synthetic-bench-") as state:
        port = free_port()
        env = {
            "RECSYS_ARTIFACTS": str(version),
            "RECSYS_PORT": str(port),
            "RECSYS_STATE_DIR": state,
            "RECSYS_LOG_LEVEL": "WARNING",
        }
        service = start_server([sys.executable, "-m", "services.synthetic"], env, port)
        try:
            ready_mib = peak_mib(service.pid)
            kind = synthetic_pb2.GenerateSyntheticRequest
            request = kind(kind=kind.KIND_INTERACTIONS, count=args.count, seed=1, chunk_size=args.chunk)
            options = [("grpc.max_receive_message_length", 64 << 20)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                stub = synthetic_pb2_grpc.SyntheticServiceStub(channel)
                started = time.perf_counter()
                streamed = users = chunks = 0
                for chunk in stub.GenerateSynthetic(request, timeout=3600):
                    streamed += len(chunk.interactions)
                    users += len(chunk.users)
                    chunks += 1
                streamed_s = time.perf_counter() - started
            stream_peak_mib = peak_mib(service.pid)
        finally:
            service.terminate()
            service.wait()
    results = {
        "count": args.count,
        "chunk": args.chunk,
        "in_process_rows": in_process,
        "in_process_rows_per_s": in_process / in_process_s,
        "streamed_rows": streamed,
        "streamed_users": users,
        "chunks": chunks,
        "streamed_rows_per_s": streamed / streamed_s,
        "service_peak_mib_when_ready": ready_mib,
        "service_peak_mib_after_stream": stream_peak_mib,
    }
    print(f"\nsynthetic interactions, {args.count:,} rows in chunks of {args.chunk} (2-core machine)")
    print(f"  in-process generator   {results['in_process_rows_per_s']:>10,.0f} rows/s")
    print(
        f"  streamed over gRPC     {results['streamed_rows_per_s']:>10,.0f} rows/s"
        f"   ({results['streamed_rows_per_s'] / results['in_process_rows_per_s']:.2f}x in-process)"
        f"   {users:,} users, {chunks} messages"
    )
    print(f"  service peak memory    {ready_mib:.0f} MiB when ready, {stream_peak_mib:.0f} MiB after the stream")
    print("(target: over 100,000 rows/s streamed, under 1 GiB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
