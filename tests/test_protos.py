"""The contract: generated stubs match the .proto files, and the fixed public names exist."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from recsys.v1 import common_pb2, gateway_pb2, synthetic_pb2

ROOT = Path(__file__).resolve().parents[1]


def _gen_protos_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos() -> None:
    assert _gen_protos_module().stale_files() == [], "run python scripts/gen_protos.py"


def test_staleness_is_detected(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gen = _gen_protos_module()
    tree = tmp_path / "protos" / "recsys" / "v1"
    tree.mkdir(parents=True)
    for proto in (ROOT / "protos" / "recsys" / "v1").glob("*.proto"):
        (tree / proto.name).write_text(proto.read_text())
    monkeypatch.setattr(gen, "PROTO_ROOT", tmp_path / "protos")
    monkeypatch.setattr(gen, "PACKAGE_DIR", tree)
    assert any(p.startswith("missing:") for p in gen.stale_files())
    gen.generate(tmp_path / "protos")
    assert gen.stale_files() == []
    (tree / "common_pb2.py").write_text("# edited by hand\n")
    assert gen.stale_files() == ["stale: recsys/v1/common_pb2.py"]


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
