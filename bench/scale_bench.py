"""How training and serving grow with the data: wall time per stage, peak memory, quality beside the
baselines, and the load the served artefact takes, for ml-100k and generated data sets of growing size.

    .venv/bin/python bench/scale_bench.py --work /tmp/scale \\
        [--size ml-100k] [--size demo:100000:20000:20] [--size demo:1000000:100000:10] \\
        [--serve ml-100k --serve demo:100000:20000:20] [--load-seconds 20] [--out results.json]

A size is `ml-100k` (../shared/data/ml-100k) or `demo:USERS:ITEMS:MEAN_HISTORY` (`recsys demo-data`, seed 7;
about USERS x MEAN_HISTORY interactions). Per size, each step runs as its own process under /usr/bin/time,
which gives its wall time and peak RSS:
  data      recsys demo-data (demo sizes)
  split     recbench.py split: the leave-last-out split every number below is measured on
  train     recsys train on the split's train.csv (default configuration); the stage times are the
            training report's (timings_s, and peak_rss_gib per stage)
  evaluate  recsys evaluate: HR@10 / NDCG@10 of the ranked list beside popularity and EASE (EASE is skipped
            past --ease-max-items items: an items x items inverse)
Then the slope of log(train wall) over log(interactions) between consecutive sizes (1.0: linear).

--serve NAME (a size of this run, twice or more) serves each artefact with the suite as `recsys serve` runs it
and alternates recbench.py load phases between them (--rounds), so both meet the same machine; it reports
throughput, p99 (medians over rounds) and each service's resident memory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import tree_memory  # noqa: E402

SHARED = ROOT.parent / "shared"
RECBENCH = SHARED / "tools" / "recbench.py"
MOVIELENS = SHARED / "data" / "ml-100k"
RECSYS = [sys.executable, "-m", "services.launcher"]
SEED = 7


@dataclass
class Size:
    name: str
    users: int = 0
    items: int = 0
    mean_history: int = 0

    @classmethod
    def parse(cls, text: str) -> Size:
        if text == "ml-100k":
            return cls(text)
        match = re.fullmatch(r"demo:(\d+):(\d+):(\d+)", text)
        if match is None:
            raise argparse.ArgumentTypeError(f"{text!r}: a size is ml-100k or demo:USERS:ITEMS:MEAN_HISTORY")
        users, items, mean_history = (int(g) for g in match.groups())
        return cls(text, users, items, mean_history)

    @property
    def slug(self) -> str:
        return self.name.replace(":", "-")


@dataclass
class Step:
    wall_s: float
    peak_rss_gib: float
    stdout: str = field(repr=False, default="")


def run_measured(command: list[str], log: Path) -> Step:
    """Run under /usr/bin/time -v; fail loudly with the log's tail if the command fails."""
    report = log.with_suffix(".time")
    started = time.perf_counter()
    with log.open("w") as stderr:
        done = subprocess.run(
            ["/usr/bin/time", "-v", "-o", str(report), *command], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}); {log}:\n{log.read_text()[-3000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text()).group(1))  # type: ignore[union-attr]
    return Step(round(wall, 1), round(peak_kib / 2**20, 2), done.stdout)


def prepare(size: Size, work: Path) -> dict[str, Any]:
    """Data, split, training and evaluation of one size; what each step cost."""
    directory = work / size.slug
    directory.mkdir(parents=True, exist_ok=True)
    split = directory / "split"
    artifacts = directory / "artifacts"
    result: dict[str, Any] = {"size": size.name, "steps": {}}
    if size.name == "ml-100k":
        data, extra = MOVIELENS, []
    else:
        data = directory / "data"
        result["generator"] = {
            "users": size.users,
            "items": size.items,
            "mean_history": size.mean_history,
            "seed": SEED,
        }
        demo = [*RECSYS, "demo-data", "--out", str(data), "--users", str(size.users), "--items", str(size.items)]
        demo += ["--mean-history", str(size.mean_history), "--seed", str(SEED)]
        result["steps"]["data"] = vars(run_measured(demo, directory / "data.log"))
        extra = ["--items", str(data / "items.csv"), "--users", str(data / "users.csv")]
        data = data / "interactions.csv"
    split_step = run_measured(
        [sys.executable, str(RECBENCH), "split", "--data", str(data), "--out", str(split)], directory / "split.log"
    )
    result["steps"]["split"] = vars(split_step)
    if size.name == "ml-100k":
        extra = ["--items", str(split / "items.csv"), "--users", str(split / "users.csv")]
    shutil.rmtree(artifacts, ignore_errors=True)
    train = [*RECSYS, "train", "--interactions", str(split / "train.csv"), *extra, "--out", str(artifacts)]
    result["steps"]["train"] = vars(run_measured(train, directory / "train.log"))
    manifest = json.loads((artifacts / "current" / "manifest.json").read_text())
    report = manifest["report"]
    result["data"] = report["data"]
    result["stage_s"] = report["timings_s"]
    result["stage_peak_rss_gib"] = report.get("peak_rss_gib", {})
    # The report's per-stage measurement resets the peak mark /usr/bin/time reads at exit: the process's peak is
    # the larger of the two (time's then covers the last stages: synthetic and write).
    result["steps"]["train"]["peak_rss_gib"] = max(
        [result["steps"]["train"]["peak_rss_gib"], *result["stage_peak_rss_gib"].values()]
    )
    result["training"] = report.get("training", {})
    evaluate = [*RECSYS, "evaluate", "--split", str(split), "--artifacts", str(artifacts)]
    if report["data"]["items"] > ARGS.ease_max_items:
        evaluate.append("--no-ease")
        result["ease_skipped"] = f"{report['data']['items']} items > {ARGS.ease_max_items}"
    if ARGS.evaluate_users:
        # EASE scores every test user against the whole catalogue (users x items x items): a seeded sample keeps
        # evaluation in minutes at 100k users; ml-100k's 943 stay whole.
        evaluate += ["--users", str(ARGS.evaluate_users)]
    step = run_measured(evaluate, directory / "evaluate.log")
    result["steps"]["evaluate"] = {k: v for k, v in vars(step).items() if k != "stdout"}
    result["quality"] = json.loads(step.stdout)
    for name in result["steps"]:
        result["steps"][name].pop("stdout", None)
    result["artifacts"] = str(artifacts)
    result["split"] = str(split)
    return result


def slopes(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """d log(train wall) / d log(interactions) between consecutive sizes: 1.0 grows linearly."""
    ordered = sorted(results, key=lambda r: r["data"]["interactions"])
    out = []
    for small, large in itertools.pairwise(ordered):
        rows = math.log(large["data"]["interactions"] / small["data"]["interactions"])
        wall = math.log(large["steps"]["train"]["wall_s"] / small["steps"]["train"]["wall_s"])
        out.append({"from": small["size"], "to": large["size"], "slope": round(wall / rows, 2) if rows else None})
    return out


def service_memory(suite: Any) -> dict[str, float]:
    """Resident memory (GiB) of each process of a running suite; tritonserver's with its python backend stub
    processes (one per model instance), which hold the ranker."""
    pids = {name: child.process.pid for name, child in suite.children.items()}
    if suite.triton is not None and suite.triton.process is not None:
        pids["tritonserver"] = suite.triton.process.pid
    return {name: round(tree_memory(pid)["VmRSS"] / 1024, 3) for name, pid in pids.items()}


def serve_and_load(prepared: list[dict[str, Any]], seconds: int, rounds: int, concurrency: int) -> dict[str, Any]:
    from services.launcher.supervisor import Suite

    suites: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {r["size"]: [] for r in prepared}
    try:
        for result in prepared:
            state = Path(tempfile.mkdtemp(prefix="scale-state-"))
            suite = Suite(artifacts=Path(result["artifacts"]), port=0, state_dir=state, start_timeout_s=900)
            suite.start()
            suites[result["size"]] = suite
        memory = {name: service_memory(suite) for name, suite in suites.items()}
        for _ in range(rounds):
            for result in prepared:
                command = [sys.executable, str(RECBENCH), "load", "--target", suites[result["size"]].gateway_address]
                command += ["--split", result["split"], "--seconds", str(seconds), "--concurrency", str(concurrency)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                runs[result["size"]].append(json.loads(done.stdout[done.stdout.index("{") :]))
    finally:
        for suite in suites.values():
            suite.stop()
    summary = {}
    for name, measured in runs.items():
        summary[name] = {
            "rps_median": round(statistics.median(m["rps"] for m in measured), 1),
            "p99_ms_median": round(statistics.median(m["p99_ms"] for m in measured), 1),
            "errors": sum(m.get("errors", 0) for m in measured),
            "rounds": measured,
            "rss_gib": memory[name],
        }
    return summary


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| data | users | items | interactions | train wall s | train peak GiB | stages s (peak) | HR@10 | NDCG@10 |"
        " popularity NDCG@10 | EASE NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        quality = r["quality"]
        ranked = quality.get("ranked", {})
        ease = quality.get("ease", {}).get("NDCG@10")
        peaks = r.get("stage_peak_rss_gib", {})
        stages = ", ".join(
            f"{k} {v:.0f}" + (f" ({peaks[k]:.1f} GiB)" if k in peaks else "") for k, v in r["stage_s"].items()
        )
        lines.append(
            f"| {r['size']} | {r['data']['users']} | {r['data']['items']} | {r['data']['interactions']} |"
            f" {r['steps']['train']['wall_s']} | {r['steps']['train']['peak_rss_gib']} | {stages} |"
            f" {ranked.get('HR@10', float('nan')):.4f} | {ranked.get('NDCG@10', float('nan')):.4f} |"
            f" {quality.get('popularity', {}).get('NDCG@10', float('nan')):.4f} |"
            f" {'skipped' if ease is None else f'{ease:.4f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="where data, splits and artefacts are written")
    parser.add_argument("--size", type=Size.parse, action="append", help="ml-100k or demo:USERS:ITEMS:MEAN_HISTORY")
    parser.add_argument("--serve", action="append", default=[], help="sizes (of --size) to serve and load")
    parser.add_argument("--load-seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--ease-max-items", type=int, default=20_000, help="EASE holds two items x items float32 matrices"
    )
    parser.add_argument("--evaluate-users", type=int, default=10_000, help="test users scored (a seeded sample)")
    parser.add_argument("--out", type=Path)
    global ARGS
    ARGS = parser.parse_args()
    sizes = ARGS.size or [Size.parse("ml-100k")]
    results = []
    for size in sizes:
        print(f"== {size.name}", file=sys.stderr, flush=True)
        results.append(prepare(size, ARGS.work))
        print(
            json.dumps({k: results[-1][k] for k in ("size", "steps", "stage_s", "stage_peak_rss_gib")}),
            file=sys.stderr,
            flush=True,
        )
    output: dict[str, Any] = {"sizes": results, "slopes": slopes(results)}
    served = [r for r in results if r["size"] in ARGS.serve]
    if served:
        output["serving"] = serve_and_load(served, ARGS.load_seconds, ARGS.rounds, ARGS.concurrency)
    print(table(results))
    for slope in output["slopes"]:
        print(f"train wall grows as rows^{slope['slope']} from {slope['from']} to {slope['to']}")
    for name, serving in output.get("serving", {}).items():
        print(
            f"serve {name}: {serving['rps_median']} req/s, p99 {serving['p99_ms_median']} ms (medians of "
            f"{len(serving['rounds'])} rounds), errors {serving['errors']}, RSS GiB {serving['rss_gib']}"
        )
    text = json.dumps(output, indent=1)
    print(text)
    if ARGS.out is not None:
        ARGS.out.write_text(text + "\n")


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
