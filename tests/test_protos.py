"""The contract: generated stubs match the .proto files, and the fixed public names exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from recsys.v1 import common_pb2, gateway_pb2, synthetic_pb2

ROOT = Path(__file__).resolve().parents[1]


def gen_protos(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # A subprocess: protoc's C++ runtime must not share a process with TensorFlow's (other tests load it).
    command = [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_committed_stubs_match_the_protos() -> None:
    done = gen_protos("--check")
    assert done.returncode == 0, f"run python scripts/gen_protos.py: {done.stderr}"


def test_staleness_is_detected(tmp_path: Path) -> None:
    tree = tmp_path / "recsys" / "v1"
    tree.mkdir(parents=True)
    for proto in (ROOT / "protos" / "recsys" / "v1").glob("*.proto"):
        (tree / proto.name).write_text(proto.read_text())
    missing = gen_protos("--root", tmp_path, "--check")
    assert missing.returncode == 1 and "missing: recsys/v1/gateway_pb2.py" in missing.stderr
    assert gen_protos("--root", tmp_path).returncode == 0
    assert gen_protos("--root", tmp_path, "--check").returncode == 0
    (tree / "common_pb2.py").write_text("# edited by hand\n")
    stale = gen_protos("--root", tmp_path, "--check")
    assert stale.returncode == 1 and "stale: recsys/v1/common_pb2.py" in stale.stderr


def _fields(message) -> set[str]:  # type: ignore[no-untyped-def]
    return set(message.DESCRIPTOR.fields_by_name)


def test_public_contract_names() -> None:
    gateway = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
    assert gateway.full_name == "recsys.v1.Gateway"
    methods = gateway.methods_by_name
    assert {"Recommend", "RecordEvents", "RegisterItems", "GenerateSynthetic"} <= set(methods)
    assert methods["GenerateSynthetic"].server_streaming
    assert not methods["Recommend"].server_streaming
    assert {"user_id", "k", "user_attributes"} <= _fields(gateway_pb2.RecommendRequest)
    assert {"items"} <= _fields(gateway_pb2.RecommendResponse)
    assert {"item_id", "score"} <= _fields(common_pb2.ScoredItem)
    assert {"events"} <= _fields(gateway_pb2.RecordEventsRequest)
    assert {"user_id", "item_id", "timestamp"} <= _fields(common_pb2.Event)
    assert {"items"} <= _fields(synthetic_pb2.RegisterItemsRequest)
    assert {"item_id", "attributes"} <= _fields(common_pb2.Item)
    assert gateway_pb2.RecommendRequest.DESCRIPTOR.fields_by_name["user_attributes"].message_type.GetOptions().map_entry
