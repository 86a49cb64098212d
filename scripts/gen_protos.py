"""Generate the Python stubs (and .pyi) of protos/recsys/v1 next to the .proto files.

python scripts/gen_protos.py          # regenerate
python scripts/gen_protos.py --check  # exit 1 when the committed stubs are stale
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = PROTO_ROOT / "recsys" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto of the tree; return the generated files relative to out_dir."""
    protos = sorted(PACKAGE_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def committed() -> list[Path]:
    return sorted(p.relative_to(PROTO_ROOT) for p in PACKAGE_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def stale_files() -> list[str]:
    """Names of stubs that differ from what the .proto files generate now (missing or extra included)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        problems = [f"extra: {p}" for p in set(committed()) - set(fresh)]
        for rel in fresh:
            target = PROTO_ROOT / rel
            if not target.exists():
                problems.append(f"missing: {rel}")
            elif not filecmp.cmp(Path(tmp) / rel, target, shallow=False):
                problems.append(f"stale: {rel}")
        return sorted(problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the committed stubs are stale")
    parser.add_argument("--root", type=Path, help="a proto tree other than protos/")
    args = parser.parse_args()
    if args.root is not None:
        global PROTO_ROOT, PACKAGE_DIR
        PROTO_ROOT = args.root.resolve()
        PACKAGE_DIR = PROTO_ROOT / "recsys" / "v1"
    if args.check:
        problems = stale_files()
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("stubs are stale: run python scripts/gen_protos.py", file=sys.stderr)
            return 1
        print("stubs are up to date")
        return 0
    for stale in set(committed()):
        (PROTO_ROOT / stale).unlink()
    for rel in generate(PROTO_ROOT):
        print(f"wrote protos/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
