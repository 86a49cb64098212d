"""The suite's throughput as a share of the one-hop ceiling, in recbench's own terms.

Starts bench/ceiling_server.py (a no-model grpc.aio server answering Gateway.Recommend), then alternates
`recbench.py load` against it and against the running suite for ROUNDS rounds, and prints each run, the
medians, and the suite's median req/s over the ceiling's.

    .venv/bin/python bench/recbench_ratio.py --recbench ../shared/tools/recbench.py --split SPLIT \\
        --target 127.0.0.1:50061 [--rounds 5] [--concurrency 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import free_port, start_server  # noqa: E402

KEYS = ("rps", "p50_ms", "p95_ms", "p99_ms")


def recbench_load(recbench: Path, split: Path, target: str, concurrency: int, seconds: float) -> dict[str, float]:
    command = [sys.executable, str(recbench), "load", "--target", target, "--split", str(split)]
    command += ["--concurrency", str(concurrency), "--seconds", str(seconds)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recbench", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--target", required=True, help="the suite's gateway")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    port = free_port()
    ceiling = start_server([sys.executable, str(ROOT / "bench" / "ceiling_server.py"), str(port)], {}, port)
    runs: dict[str, list[dict[str, float]]] = {"ceiling": [], "suite": []}
    try:
        for round_ in range(1, args.rounds + 1):
            for name, target in (("ceiling", f"127.0.0.1:{port}"), ("suite", args.target)):
                run = recbench_load(args.recbench, args.split, target, args.concurrency, args.seconds)
                runs[name].append(run)
                print(
                    f"round {round_} {name:7s} {run['rps']:7.0f} req/s  p50 {run['p50_ms']:5.1f} ms  "
                    f"p95 {run['p95_ms']:5.1f} ms  p99 {run['p99_ms']:5.1f} ms  errors {run['errors']}",
                    flush=True,
                )
    finally:
        ceiling.terminate()
        ceiling.wait()
    medians = {}
    for name, results in runs.items():
        medians[name] = {key: statistics.median(r[key] for r in results) for key in KEYS}
        errors = sum(int(r["errors"]) for r in results)
        m = medians[name]
        print(
            f"{name:7s} medians: {m['rps']:7.0f} req/s  p50 {m['p50_ms']:.1f} ms  p95 {m['p95_ms']:.1f} ms  "
            f"p99 {m['p99_ms']:.1f} ms  errors {errors}"
        )
    print(f"suite / ceiling: {100 * medians['suite']['rps'] / medians['ceiling']['rps']:.1f}%")


if __name__ == "__main__":
    main()
