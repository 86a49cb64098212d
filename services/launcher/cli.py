"""`recsys`: train artefacts, serve the suite, or do both on a fresh machine (`recsys up`)."""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from services.launcher.supervisor import LaunchError, PublicTLS, Suite, wait_for_signal

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)

DEFAULT_HOME = Path(".recsys")


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}")  # a path or message may hold [brackets]
    raise typer.Exit(code)


# What the training commands (train, evaluate, and up when it trains) need beyond a serving install: the
# `train` extra. A serve-only install (the services image) says so instead of failing on an import.
TRAINING_MODULES = ("tensorflow", "onnx", "matplotlib")


def _require_training_install(command: str) -> None:
    missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        _fail(
            f"recsys {command} needs the training dependencies (missing: {', '.join(missing)}): "
            "pip install 'recsys[train]' (this install serves only)"
        )


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _load_dataset(
    interactions: Path | None, items: Path | None, users: Path | None, movielens: Path | None, min_rating: float
) -> Any:
    from trainer.data import load_movielens, load_tables

    if movielens is not None:
        if interactions is not None:
            _fail("give either --movielens or --interactions, not both")
        return load_movielens(movielens, min_rating)
    if interactions is None:
        _fail("give --interactions FILE (CSV or Parquet; or --movielens DIR)")
    return load_tables(interactions, items, users, min_rating)


class RichTrainingProgress:
    """trainer.progress.TrainingProgress on the console: a line for the stage and a bar with an ETA for each
    model's work (batches, generator updates) as it is reported."""

    STAGES = ("workflow", "validation", "models", "synthetic", "write")

    def __init__(self, console: Console) -> None:
        fixed = Column(no_wrap=True)  # on a narrow console the detail is cut, not the figures
        self.bars = Progress(
            TextColumn("{task.description}", table_column=fixed),
            BarColumn(bar_width=10, table_column=fixed),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(table_column=Column(no_wrap=True)),
            TextColumn("eta", table_column=Column(no_wrap=True)),
            TimeRemainingColumn(table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[detail]}", table_column=Column(overflow="ellipsis", no_wrap=True, min_width=0)),
            console=console,
        )
        self.stage_task = self.bars.add_task("training", total=len(self.STAGES), detail="")
        self.tasks: dict[str, TaskID] = {}
        self.current = ""

    def __enter__(self) -> RichTrainingProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.update(self.stage_task, completed=len(self.STAGES))
        self.bars.stop()

    def stage(self, name: str) -> None:
        self.current = name
        completed = self.STAGES.index(name) if name in self.STAGES else None
        self.bars.update(self.stage_task, description=f"training: {name}", completed=completed)

    def work(self, task: str, done: int, total: int, detail: str = "") -> None:
        key = f"{self.current}: {task}"
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(f"  {task}", total=total, detail=detail)
        self.bars.update(self.tasks[key], completed=done, total=total, detail=detail)


def run_training(
    interactions: Path | None,
    items: Path | None,
    users: Path | None,
    movielens: Path | None,
    config_path: Path | None,
    out: Path,
) -> Path:
    _require_training_install("train")
    from trainer.config import ConfigError, load_config
    from trainer.data import DataError
    from trainer.pipeline import train

    try:
        config = load_config(config_path)
        dataset = _load_dataset(interactions, items, users, movielens, config["data"]["min_rating"])
    except (ConfigError, DataError, OSError) as error:
        _fail(str(error))
    with RichTrainingProgress(console) as progress:
        try:
            result = train(dataset, config, out, progress)
        except ValueError as error:
            _fail(str(error))
    if not result.chief:
        console.print(f"[green]worker done:[/green] the chief writes the artefact under {out}")
        return result.version_dir
    _print_report(result.report)
    console.print(f"[green]artefacts written:[/green] {result.version_dir}")
    return result.version_dir


def _print_report(report: dict[str, Any]) -> None:
    data = report["data"]
    console.print(f"data: {data['interactions']} interactions, {data['users']} users, {data['items']} items")
    for quality in report["quality"]:
        rejected = ", ".join(f"{k}={v}" for k, v in quality["rejected"].items()) or "none rejected"
        console.print(f"  {quality['source']}: kept {quality['rows_kept']}/{quality['rows_read']} ({rejected})")
    validation = report["validation"]
    table = Table(title=f"validation: last item of {validation['users']} users held out")
    table.add_column("model")
    table.add_column("HR@10", justify="right")
    table.add_column("NDCG@10", justify="right")
    for name in ("popularity", "autoencoder", "item_knn", "blend"):
        if name in validation:
            table.add_row(name, f"{validation[name]['HR@10']:.4f}", f"{validation[name]['NDCG@10']:.4f}")
    console.print(table)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Artefact root; a new version directory is written inside it.")],
    interactions: Annotated[
        Path | None,
        typer.Option(
            help="user_id,item_id,timestamp[,rating]: a .csv or .parquet/.pq file, or a directory of either"
            " (read in batches)."
        ),
    ] = None,
    items: Annotated[
        Path | None, typer.Option(help="item_id plus attribute columns: CSV or Parquet file, or a directory.")
    ] = None,
    users: Annotated[
        Path | None, typer.Option(help="user_id plus attribute columns: CSV or Parquet file, or a directory.")
    ] = None,
    movielens: Annotated[Path | None, typer.Option(help="A MovieLens ml-100k or ml-1m directory.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML overriding trainer/defaults.toml.")] = None,
) -> None:
    """Train every model and write one versioned artefact directory atomically."""
    run_training(interactions, items, users, movielens, config, out)


def _start_suite(
    artifacts: Path,
    port: int,
    host: str,
    state_dir: Path | None,
    redis_url: str | None = None,
    triton_config: str | None = None,
    public_tls: PublicTLS | None = None,
) -> Suite:
    from recsys_runtime.artifacts import ArtifactError, open_verified_version
    from recsys_runtime.triton_contract import CONFIGS_DIR, RANKER_MODEL, REPOSITORY_DIR

    # The version the services will start on: `current`, or the last version that verifies if it does not.
    try:
        verified = open_verified_version(artifacts)
    except ArtifactError as error:
        _fail(str(error))
    if verified.refused:
        console.print(
            f"[yellow]warning:[/yellow] `current` ({verified.wanted.name}) does not verify; serving"
            f" {verified.version}, the last version that does (refused: {'; '.join(map(str, verified.refused))})"
        )
    version_dir = verified.path
    if triton_config:
        configs = version_dir / REPOSITORY_DIR / RANKER_MODEL / CONFIGS_DIR
        known = sorted(p.stem for p in configs.glob("*.pbtxt"))
        if triton_config not in known:
            _fail(f"--triton-config {triton_config!r}: the artefact has {known or 'no deployment configurations'}")
    store_env = {"RECSYS_STORE": "redis", "RECSYS_REDIS_URL": redis_url} if redis_url else {}
    suite = Suite(
        artifacts=artifacts,
        port=port,
        host=host,
        state_dir=state_dir,
        extra_env=store_env,
        triton_config=triton_config,
        public_tls=public_tls,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with console.status("starting services"):
            address = suite.start()
    except LaunchError as error:
        _fail(str(error), 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    console.print(f"[green]gateway ready:[/green] {address}" + (" (TLS, API keys)" if public_tls else ""))
    for name, metrics_address in suite.metrics_addresses.items():
        console.print(f"  metrics of {name}: {metrics_address}")
    if public_tls is not None:
        console.print(f"  CA of the gateway's certificate (new at every start): {suite.ca_file}")
        # On stdout, for scripts, like the address: the CA first, the key (when one was made) last.
        print(f"ca {suite.ca_file}", flush=True)
        if suite.generated_api_key is not None:
            console.print("  API key made for this run (admin role; shown this once, kept nowhere):")
            print(f"api-key {suite.generated_api_key}", flush=True)
    print(f"gateway {address}", flush=True)  # on stdout, for scripts
    return suite


@app.command()
def serve(
    artifacts: Annotated[Path, typer.Option(help="Artefact root (its current version) or one version directory.")],
    port: Annotated[int, typer.Option(help="Gateway port; 0 picks a free one.", min=0, max=65535)] = 50051,
    host: Annotated[str, typer.Option(help="Address every service binds.")] = "127.0.0.1",
    state_dir: Annotated[
        Path | None, typer.Option(help="Online state (recorded events); default ARTIFACTS/state.")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Keep recorded events in Redis (e.g. redis://127.0.0.1:6379/0), not SQLite.")
    ] = None,
    triton_config: Annotated[
        str | None,
        typer.Option(
            help="Triton deployment configuration (e.g. gpu, gpu-cuda: onnxruntime on GPU); default: the CPU one."
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Serve the gateway's port over TLS (a certificate from the suite's CA) and require API keys.",
        ),
    ] = False,
    api_keys: Annotated[
        Path | None,
        typer.Option(
            help="With --tls: the API-key file (lines from `python -m services.common.auth new-key`);"
            " default: one admin key made for this run and printed once.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Start every service as its own process and serve until SIGTERM or Ctrl-C.

    The suite's own processes always talk mTLS, with certificates from a CA made at start; the gateway's
    port is plaintext unless --tls."""
    if api_keys is not None and not tls:
        _fail("--api-keys applies to --tls")
    public = PublicTLS(api_keys) if tls else None
    suite = _start_suite(artifacts, port, host, state_dir, redis_url, triton_config, public)
    raise typer.Exit(wait_for_signal(suite))


def _sample_recommendation(address: str, user_id: str) -> dict[str, Any]:
    import grpc

    from recsys.v1 import gateway_pb2, gateway_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        reply = gateway_pb2_grpc.GatewayStub(channel).Recommend(
            gateway_pb2.RecommendRequest(user_id=user_id, k=5), timeout=10
        )
    return {
        "user_id": user_id,
        "model_version": reply.model_version,
        "items": [{"item_id": i.item_id, "score": round(i.score, 4)} for i in reply.items],
        "degraded_stages": [gateway_pb2.Stage.Name(s) for s in reply.degraded_stages],
    }


@app.command()
def up(
    movielens: Annotated[Path | None, typer.Option(help="Train on MovieLens instead of the demo data.")] = None,
    home: Annotated[Path, typer.Option(help="Where demo data, artefacts and state live.")] = DEFAULT_HOME,
    port: Annotated[int, typer.Option(help="Gateway port; 0 picks a free one.", min=0, max=65535)] = 50051,
    once: Annotated[bool, typer.Option(help="Stop after printing the sample recommendation.")] = False,
) -> None:
    """Demo data if none, training if no artefacts, then serve and print one recommendation."""
    from recsys_runtime.artifacts import ArtifactError, resolve_version

    artifacts = home / ("artifacts-movielens" if movielens else "artifacts")
    try:
        resolve_version(artifacts)
        console.print(f"using existing artefacts in {artifacts}")
    except ArtifactError:
        if movielens is not None:
            run_training(None, None, None, movielens, None, artifacts)
        else:
            from trainer.demo import generate

            data_dir = home / "demo-data"
            if not (data_dir / "interactions.csv").is_file():
                with console.status("generating demo data"):
                    generate().write(data_dir)
                console.print(f"demo data written to {data_dir}")
            run_training(
                data_dir / "interactions.csv", data_dir / "items.csv", data_dir / "users.csv", None, None, artifacts
            )
    suite = _start_suite(artifacts, port, "127.0.0.1", None)
    try:
        import pandas as pd

        from recsys_runtime.artifacts import open_verified_version
        from recsys_runtime.layout import HISTORIES_FILE

        served = open_verified_version(artifacts).path  # the version the suite serves, fallback included
        user_id = str(pd.read_parquet(served / HISTORIES_FILE, columns=["user_id"]).iloc[0, 0])
        print(json.dumps(_sample_recommendation(suite.gateway_address, user_id), indent=1), flush=True)
    except BaseException:
        suite.stop()
        raise
    if once:
        suite.stop()
        return
    console.print("serving; Ctrl-C stops every service")
    raise typer.Exit(wait_for_signal(suite))


@app.command()
def evaluate(
    split: Annotated[Path, typer.Option(help="A leave-last-out split (recbench split): train.csv and test.csv.")],
    artifacts: Annotated[Path, typer.Option(help="Artefacts trained on that split's train.csv.")],
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here.")] = None,
    ease: Annotated[bool, typer.Option(help="Compute the EASE baseline (an n_items x n_items inverse).")] = True,
    users: Annotated[
        int | None, typer.Option(help="Score a seeded sample of this many test users (large data sets).", min=1)
    ] = None,
) -> None:
    """HR@k and NDCG@k of the candidate stage and the ranked list, beside popularity and EASE."""
    _require_training_install("evaluate")
    from recsys_runtime.artifacts import ArtifactError
    from trainer.evaluate import evaluate_split

    for name in ("train.csv", "test.csv"):
        if not (split / name).is_file():
            _fail(f"{split / name}: no such file (make one with recbench.py split)")
    try:
        result = evaluate_split(split, artifacts, with_ease=ease, max_users=users)
    except ArtifactError as error:
        _fail(str(error))
    text = json.dumps(result, indent=1)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


@app.command()
def versions(
    artifacts: Annotated[Path, typer.Option(help="An artefact root (what `recsys train --out` wrote).")],
) -> None:
    """List the artefact versions under a root, oldest first, marking the one being served."""
    from recsys_runtime.artifacts import current_version, list_versions, load_manifest

    names = list_versions(artifacts)
    if not names:
        _fail(f"{artifacts}: no artefact version found")
    current = current_version(artifacts)
    table = Table("", "version", "NDCG@10 (validation)")
    for name in names:
        validation = load_manifest(artifacts / name, verify=False).get("report", {}).get("validation", {})
        ndcg = validation.get("blend", {}).get("NDCG@10")
        table.add_row("*" if name == current else "", name, f"{ndcg:.4f}" if ndcg is not None else "")
    Console().print(table)


@app.command()
def rollback(
    artifacts: Annotated[Path, typer.Option(help="An artefact root (what `recsys train --out` wrote).")],
    to: Annotated[str | None, typer.Option(help="Switch to this version (default: the one before current).")] = None,
) -> None:
    """Point `current` back at the previous version (or --to any version); a running suite follows within
    its reload interval (RECSYS_RELOAD_POLL_MS), without restarting and without failed requests."""
    from recsys_runtime.artifacts import ArtifactError, current_version, load_manifest, rollback_target, switch_current
    from recsys_runtime.triton_links import link_served_version

    try:
        target = rollback_target(artifacts, to)
        load_manifest(artifacts / target, verify=True)  # a corrupted version is refused here, not by the suite
        link_served_version(artifacts, target)
        previous = current_version(artifacts)
        switch_current(artifacts, target)
    except ArtifactError as error:
        _fail(str(error))
    console.print(f"current: {previous} -> {target}")


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Directory for interactions.csv, items.csv, users.csv.")],
    users: Annotated[int, typer.Option(min=1)] = 2000,
    items: Annotated[int, typer.Option(min=8)] = 600,
    mean_history: Annotated[int, typer.Option(min=3)] = 40,
    seed: int = 7,
) -> None:
    """Write the generated demo data set as CSV."""
    from trainer.demo import generate

    paths = generate(users, items, mean_history, seed).write(out)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
