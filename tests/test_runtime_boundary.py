"""The serving boundary: recsys_runtime and the serving side of services/ never pull in the trainer's heavy
dependencies (TensorFlow, Keras, matplotlib, the onnx graph builder) nor import the trainer package."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# onnx is the graph builder the trainer exports with; onnxruntime, which serving runs the graph with, is allowed.
FORBIDDEN = ("tensorflow", "keras", "matplotlib", "onnx")
# The launcher's command line may import the trainer only inside the functions that train or evaluate.
CLI = ROOT / "services" / "launcher" / "cli.py"
CLI_TRAINING_FUNCTIONS = {"_load_dataset", "run_training", "up", "evaluate", "demo_data"}

# Run in a fresh interpreter: imports every module serving loads, one at a time, and names the first module
# after whose import each forbidden package appeared.
IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys

FORBIDDEN = {forbidden!r}

def forbidden_loaded():
    return sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))

def walk(package):
    module = importlib.import_module(package)
    yield package
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        yield info.name

names = [*walk("recsys_runtime"), *walk("services.common")]
for service in ("features", "candidates", "ranking", "synthetic", "gateway"):
    names.extend(walk("services." + service))
names.extend(["services.launcher.supervisor", "services.launcher.cli"])
culprits = {{}}
for name in names:
    importlib.import_module(name)
    for loaded in forbidden_loaded():
        culprits.setdefault(loaded.split(".")[0], name)
print(json.dumps({{"imported": names, "forbidden": culprits}}))
"""


def test_serving_imports_none_of_the_training_dependencies() -> None:
    code = IMPORT_EVERYTHING.format(forbidden=FORBIDDEN)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    imported = set(report["imported"])
    # The walk reached what it is meant to: the runtime's models, every service and its entry point.
    assert {"recsys_runtime.models.candidates", "recsys_runtime.triton_models", "recsys_runtime.synthesis"} <= imported
    assert {f"services.{s}.__main__" for s in ("features", "candidates", "ranking", "synthetic", "gateway")} <= imported
    assert report["forbidden"] == {}, f"package -> the module whose import loaded it: {report['forbidden']}"


def trainer_imports(tree: ast.AST) -> Iterator[tuple[ast.stmt, list[str]]]:
    """Every import of the trainer package, with the names of the functions it sits in (outermost first)."""

    def imported(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if isinstance(node, ast.ImportFrom) and node.level == 0:  # relative imports stay in their package
            return [node.module or ""]
        return []

    def visit(node: ast.AST, functions: list[str]) -> Iterator[tuple[ast.stmt, list[str]]]:
        if isinstance(node, ast.Import | ast.ImportFrom) and any(m.split(".")[0] == "trainer" for m in imported(node)):
            yield node, functions
        inner = [*functions, node.name] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else functions
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner)

    yield from visit(tree, [])


def test_runtime_and_serving_code_never_import_the_trainer() -> None:
    serving = [*(ROOT / "recsys_runtime").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    files = [*serving, ROOT / "docker" / "triton_cpu.py"]
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in files
        if path != CLI
        for node, _ in trainer_imports(ast.parse(path.read_text(), str(path)))
    ]
    assert len(files) > 40 and offenders == []


def test_the_launcher_imports_the_trainer_only_inside_training_commands() -> None:
    found = list(trainer_imports(ast.parse(CLI.read_text(), str(CLI))))
    assert found, "the training commands import the trainer lazily; none found"
    misplaced = [
        f"cli.py:{node.lineno} ({'.'.join(functions) or 'module level'})"
        for node, functions in found
        if not functions or functions[0] not in CLI_TRAINING_FUNCTIONS
    ]
    assert misplaced == []


def test_triton_model_entry_point_imports_the_runtime() -> None:
    from trainer.triton_repository import MODEL_PY

    modules = [n.module for n in ast.walk(ast.parse(MODEL_PY)) if isinstance(n, ast.ImportFrom)]
    assert modules == ["recsys_runtime.triton_models"]


def test_serving_default_generated_weight_is_the_trainers() -> None:
    from recsys_runtime.models.candidates import DEFAULT_GENERATED_WEIGHT
    from trainer.config import defaults

    assert defaults()["candidates"]["generated_weight"] == DEFAULT_GENERATED_WEIGHT


def test_ranker_entry_point_of_older_artefacts_still_loads_without_training_dependencies() -> None:
    """Versions trained before the runtime package name trainer.triton_models in their model.py."""
    older_model_py = "from trainer.triton_models import RankerModel as TritonPythonModel  # noqa: F401\n"
    script = (
        older_model_py
        + "import sys\n"
        + "from recsys_runtime.triton_models import RankerModel\n"
        + "assert TritonPythonModel is RankerModel\n"
        + f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
