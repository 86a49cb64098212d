"""The whole suite for real: `recsys train` then `recsys serve`, called over gRPC like a backend would."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from recsys.v1 import (
    candidates_pb2,
    candidates_pb2_grpc,
    common_pb2,
    features_pb2,
    features_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
    synthetic_pb2,
)
from recsys_runtime.workflow import Workflow
from services.common.encoding import WIRE_INDEX, WIRE_SCORE
from services.common.tls import TLSFiles
from services.gateway.client import GatewayConnection
from services.launcher.certificates import LocalAuthority
from tests.suite import Served, SpanCollector, alive, clone_version, recsys, serve


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    data = root / "data"
    done = recsys("demo-data", "--out", str(data), "--users", "300", "--items", "150", "--mean-history", "15")
    assert done.returncode == 0, done.stderr
    done = recsys(
        "train",
        "--interactions",
        str(data / "interactions.csv"),
        "--items",
        str(data / "items.csv"),
        "--users",
        str(data / "users.csv"),
        "--out",
        str(root / "artifacts"),
    )
    assert done.returncode == 0, done.stderr
    return root / "artifacts"


@pytest.fixture(scope="module")
def history(artifacts: Path) -> pd.DataFrame:
    return pd.read_parquet(artifacts / "current" / "histories.parquet")


@pytest.fixture(scope="module")
def collector() -> Iterator[SpanCollector]:
    spans = SpanCollector()
    yield spans
    spans.stop()


@pytest.fixture(scope="module")
def suite(artifacts: Path, collector: SpanCollector) -> Iterator[Served]:
    # A short unload grace: the reload test sees the previous version's ranker leave Triton.
    served = serve(artifacts, otel=collector.env, triton_unload_grace_s="2")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def gateway(suite: Served) -> Iterator[gateway_pb2_grpc.GatewayStub]:
    with grpc.insecure_channel(suite.address) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def recommend(gateway: gateway_pb2_grpc.GatewayStub, user_id: str, k: int = 10, **fields: object):  # type: ignore[no-untyped-def]
    return gateway.Recommend(gateway_pb2.RecommendRequest(user_id=user_id, k=k, **fields), timeout=10)


def violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "INVALID_ARGUMENT must carry google.rpc details"
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return [v.field for v in bad_request.field_violations]


def test_gateway_is_serving_and_reflected(suite: Served) -> None:
    with grpc.insecure_channel(suite.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert "recsys.v1.Gateway" in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_known_user_gets_k_unseen_items_from_the_full_path(
    gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame, artifacts: Path
) -> None:
    user = str(history["user_id"].iloc[0])
    seen = set(history.loc[history["user_id"] == user, "item_id"])
    reply = recommend(gateway, user, 20)
    ids = [item.item_id for item in reply.items]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert not seen & set(ids)
    scores = [item.score for item in reply.items]
    assert scores == sorted(scores, reverse=True)
    assert list(reply.degraded_stages) == []
    assert not reply.cold_start
    manifest = json.loads((artifacts / "current" / "manifest.json").read_text())
    assert reply.model_version == manifest["version"]


def test_unknown_user_gets_a_cold_start_answer(gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame) -> None:
    reply = recommend(gateway, "never-seen-before", 10, user_attributes={"country": "fr"})
    assert reply.cold_start
    assert len(reply.items) == 10
    # Without a history the candidates are the most popular items; the rankers only re-order them.
    popular = set(history["item_id"].value_counts().index[:200])
    assert {item.item_id for item in reply.items} <= popular


def test_recorded_events_reach_the_next_recommendation(
    gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame
) -> None:
    user = str(history["user_id"].iloc[-1])
    top = recommend(gateway, user).items[0].item_id
    event = common_pb2.Event(user_id=user, item_id=top, timestamp=int(time.time()), event_id=f"{user}-1")
    reply = gateway.RecordEvents(gateway_pb2.RecordEventsRequest(events=[event]), timeout=10)
    assert (reply.accepted, reply.duplicates) == (1, 0)
    assert top not in [item.item_id for item in recommend(gateway, user).items]
    again = gateway.RecordEvents(gateway_pb2.RecordEventsRequest(events=[event]), timeout=10)
    assert (again.accepted, again.duplicates) == (0, 1)


def test_events_make_a_new_user_known(gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame) -> None:
    item = str(history["item_id"].iloc[0])
    event = common_pb2.Event(user_id="newcomer", item_id=item, timestamp=int(time.time()))
    gateway.RecordEvents(gateway_pb2.RecordEventsRequest(events=[event]), timeout=10)
    reply = recommend(gateway, "newcomer")
    assert not reply.cold_start
    assert item not in [i.item_id for i in reply.items]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_id": "1", "k": 0}, "k"),
        ({"user_id": "1", "k": 1001}, "k"),
        ({"user_id": "", "k": 10}, "user_id"),
        ({"user_id": "u" * 300, "k": 10}, "user_id"),
        ({"user_id": "1", "k": 10, "user_attributes": {f"a{i}": "x" for i in range(100)}}, "user_attributes"),
        ({"user_id": "1", "k": 10, "exclude_item_ids": [""]}, "exclude_item_ids[0]"),
    ],
)
def test_bad_recommend_requests_name_the_field(
    gateway: gateway_pb2_grpc.GatewayStub, request_fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        gateway.Recommend(gateway_pb2.RecommendRequest(**request_fields), timeout=10)  # type: ignore[arg-type]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert field in violations(raised.value)


def test_bad_events_are_rejected_and_nothing_is_stored(gateway: gateway_pb2_grpc.GatewayStub) -> None:
    good = common_pb2.Event(user_id="careful", item_id="x", timestamp=1_700_000_000)
    in_milliseconds = common_pb2.Event(user_id="careful", item_id="y", timestamp=1_700_000_000_000)
    with pytest.raises(grpc.RpcError) as raised:
        gateway.RecordEvents(gateway_pb2.RecordEventsRequest(events=[good, in_milliseconds]), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert violations(raised.value) == ["events[1].timestamp"]
    assert recommend(gateway, "careful").cold_start, "a rejected batch must store none of its events"


def test_oversized_event_batch_is_resource_exhausted(gateway: gateway_pb2_grpc.GatewayStub) -> None:
    events = [common_pb2.Event(user_id="bulk", item_id=f"i{i}", timestamp=1_700_000_000) for i in range(1001)]
    with pytest.raises(grpc.RpcError) as raised:
        gateway.RecordEvents(gateway_pb2.RecordEventsRequest(events=events), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_cold_user_with_attributes_goes_through_the_generated_history(
    gateway: gateway_pb2_grpc.GatewayStub,
) -> None:
    reply = recommend(gateway, "visitor-1", 10, user_attributes={"age_group": "25-34", "country": "fr"})
    assert reply.cold_start and len(reply.items) == 10 and not reply.degraded_stages
    assert {item.source for item in reply.items} == {"candidate_order"}
    again = recommend(gateway, "visitor-1", 10, user_attributes={"age_group": "25-34", "country": "fr"})
    assert [i.item_id for i in again.items] == [i.item_id for i in reply.items], "the same visitor, the same answer"
    other = recommend(gateway, "visitor-2", 10, user_attributes={"age_group": "55+", "country": "jp"})
    assert [i.item_id for i in other.items] != [i.item_id for i in reply.items]


def test_synthetic_streams_and_refusals(gateway: gateway_pb2_grpc.GatewayStub) -> None:
    kind = synthetic_pb2.GenerateSyntheticRequest
    request = kind(kind=kind.KIND_INTERACTIONS, count=2500, seed=3, chunk_size=1000, conditions={"country": "fr"})
    chunks = list(gateway.GenerateSynthetic(request, timeout=30))
    assert [len(c.interactions) for c in chunks] == [1000, 1000, 500]
    users = [u for c in chunks for u in c.users]
    assert users and all(u.attributes["country"] == "fr" for u in users)
    assert {e.user_id for c in chunks for e in c.interactions} == {u.user_id for u in users}
    again = list(gateway.GenerateSynthetic(request, timeout=30))
    assert [e.item_id for c in again for e in c.interactions] == [e.item_id for c in chunks for e in c.interactions]
    users_only = list(gateway.GenerateSynthetic(kind(kind=kind.KIND_USERS, count=5), timeout=10))
    assert sum(len(c.users) for c in users_only) == 5
    with pytest.raises(grpc.RpcError) as raised:
        list(gateway.GenerateSynthetic(kind(count=5), timeout=10))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def _users_recommended(gateway: gateway_pb2_grpc.GatewayStub, users: list[str], item_id: str, k: int) -> int:
    return sum(item_id in {i.item_id for i in recommend(gateway, user, k).items} for user in users)


def test_a_registered_item_is_recommendable_within_a_second_and_after_a_restart(
    artifacts: Path, gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame
) -> None:
    items = pd.read_parquet(artifacts / "current" / "catalog" / "items.parquet")
    genre_counts = history.merge(items, on="item_id")["genres"].str.split("|").explode().value_counts()
    popular_genre = str(genre_counts.index[0])
    new_item = common_pb2.Item(item_id="brand-new", attributes={"genres": popular_genre, "year": "2001"})
    users = [str(u) for u in history["user_id"].drop_duplicates().iloc[:40]]
    assert _users_recommended(gateway, users[:5], "brand-new", 50) == 0, "not an item before it is registered"

    reply = gateway.RegisterItems(synthetic_pb2.RegisterItemsRequest(items=[new_item]), timeout=10)
    registered_at = time.monotonic()
    assert reply.registered == 1
    found_after = None
    while time.monotonic() - registered_at < 5.0 and found_after is None:
        if _users_recommended(gateway, users, "brand-new", 50):
            found_after = time.monotonic() - registered_at
    assert found_after is not None and found_after < 1.0, found_after
    again = gateway.RegisterItems(synthetic_pb2.RegisterItemsRequest(items=[new_item]), timeout=10)
    assert again.registered == 0, "registering twice registers once"
    known = common_pb2.Item(item_id=str(items["item_id"].iloc[0]), attributes={"genres": popular_genre})
    assert gateway.RegisterItems(synthetic_pb2.RegisterItemsRequest(items=[known]), timeout=10).registered == 0

    restarted = serve(artifacts)  # a second suite on the same state: the registration is kept
    try:
        with grpc.insecure_channel(restarted.address) as channel:
            assert _users_recommended(gateway_pb2_grpc.GatewayStub(channel), users, "brand-new", 50) > 0
    finally:
        restarted.stop()


def _wait_for_full_answers(gateway: gateway_pb2_grpc.GatewayStub, user: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not recommend(gateway, user).degraded_stages:
            return
        time.sleep(0.2)
    raise AssertionError("answers stayed degraded after the service was restarted")


@pytest.mark.parametrize(
    ("service", "stage"),
    [
        ("ranking", gateway_pb2.STAGE_RANKING),
        ("tritonserver", gateway_pb2.STAGE_RANKING),
        ("candidates", gateway_pb2.STAGE_CANDIDATES),
    ],
)
def test_a_crashed_stage_degrades_the_answer_then_comes_back(
    suite: Served, gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame, service: str, stage: int
) -> None:
    user = str(history["user_id"].iloc[5])
    seen = set(history.loc[history["user_id"] == user, "item_id"])
    pid = suite.service_pid(service)
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.01)
    reply = recommend(gateway, user)
    assert stage in reply.degraded_stages
    assert len(reply.items) == 10
    assert not seen & {item.item_id for item in reply.items}
    _wait_for_full_answers(gateway, user)
    assert suite.service_pid(service) != pid


def test_a_callers_trace_continues_through_every_hop(
    gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame, collector: SpanCollector
) -> None:
    trace_id, caller_span = os.urandom(16), os.urandom(8)
    traceparent = f"00-{trace_id.hex()}-{caller_span.hex()}-01"
    user = str(history["user_id"].iloc[7])
    reply = gateway.Recommend(
        gateway_pb2.RecommendRequest(user_id=user, k=10), timeout=10, metadata=[("traceparent", traceparent)]
    )
    assert not reply.degraded_stages
    hops = {"recsys-gateway", "recsys-features", "recsys-candidates", "recsys-ranking"}
    deadline = time.monotonic() + 15
    # Each service exports its spans as they end: the gateway's client calls end before its server span, so
    # wait for every hop's server span, not just any span of each service.
    while not hops <= {s for s, span in collector.of_trace(trace_id) if span.kind == span.SPAN_KIND_SERVER}:
        assert time.monotonic() < deadline, f"spans seen: {[(s, x.name) for s, x in collector.of_trace(trace_id)]}"
        time.sleep(0.1)
    spans = collector.of_trace(trace_id)
    by_id = {span.span_id: (service, span) for service, span in spans}
    server = {service: span for service, span in spans if span.kind == span.SPAN_KIND_SERVER}
    # The gateway's server span continues the caller's span ...
    assert server["recsys-gateway"].parent_span_id == caller_span
    assert server["recsys-gateway"].name == "/recsys.v1.Gateway/Recommend"
    # ... and each stage's server span is the child of the gateway's client call to it.
    for service in ("recsys-features", "recsys-candidates", "recsys-ranking"):
        caller_service, call = by_id[server[service].parent_span_id]
        assert caller_service == "recsys-gateway" and call.kind == call.SPAN_KIND_CLIENT
        assert call.parent_span_id == server["recsys-gateway"].span_id


def _user_context(suite: Served, user: str) -> common_pb2.UserContext:
    """The user's context as the features service gives it (every field)."""
    with suite.stage_channel("features") as channel:
        context: common_pb2.UserContext = features_pb2_grpc.FeatureServiceStub(channel).GetUserContext(
            features_pb2.GetUserContextRequest(user_id=user), timeout=10
        )
    return context


def test_packed_candidates_rank_like_scored_items_whatever_version_packed_them(
    suite: Served, history: pd.DataFrame, artifacts: Path
) -> None:
    context = _user_context(suite, str(history["user_id"].iloc[11]))
    with (
        suite.stage_channel("candidates") as candidates_channel,
        suite.stage_channel("ranking") as ranking_channel,
    ):
        candidates = candidates_pb2_grpc.CandidateServiceStub(candidates_channel)
        request = candidates_pb2.GetCandidatesRequest(context=context, n=50)
        scored = candidates.GetCandidates(request, timeout=10)
        request.packed = True
        packed = candidates.GetCandidates(request, timeout=10).packed
        assert list(packed.item_ids) == [c.item_id for c in scored.items]
        assert np.frombuffer(packed.scores, WIRE_SCORE).tolist() == pytest.approx([c.score for c in scored.items])
        assert packed.artifact_version == scored.model_version and packed.source == scored.model
        # This version's vocabulary indices; 0 for an item registered online (not in it).
        workflow = Workflow.load(artifacts / "current" / "workflow")
        expected_indices = workflow.items.encode(list(packed.item_ids))
        assert np.frombuffer(packed.item_indices, WIRE_INDEX).tolist() == expected_indices.tolist()
        # The most popular items by the artefact's popularity scores, excluded ids left out.
        popularity = np.load(artifacts / "current" / "models" / "popularity.npy")
        by_popularity = [str(workflow.items.ids[i - 1]) for i in np.argsort(-popularity[1:], kind="stable") + 1]
        excluded = by_popularity[1]
        popular = candidates.GetPopular(candidates_pb2.GetPopularRequest(n=5, exclude_item_ids=[excluded]), timeout=10)
        assert [c.item_id for c in popular.items] == [i for i in by_popularity[:6] if i != excluded]
        assert popular.model == "popularity" and popular.model_version == scored.model_version

        rank = ranking_pb2_grpc.RankingServiceStub(ranking_channel).Rank
        expected = [
            i.item_id for i in rank(ranking_pb2.RankRequest(context=context, candidates=scored.items, k=10)).items
        ]
        assert len(expected) == 10
        assert [
            i.item_id for i in rank(ranking_pb2.RankRequest(context=context, packed_candidates=packed, k=10)).items
        ] == expected
        # Packed by another version (a switch in progress): its indices are not trusted, the ids are encoded.
        foreign = common_pb2.PackedCandidates()
        foreign.CopyFrom(packed)
        foreign.artifact_version = "another-version"
        foreign.item_indices = np.full(len(packed.item_ids), 7, WIRE_INDEX).tobytes()
        assert [
            i.item_id for i in rank(ranking_pb2.RankRequest(context=context, packed_candidates=foreign, k=10)).items
        ] == expected

        broken = common_pb2.PackedCandidates()
        broken.CopyFrom(packed)
        broken.scores = packed.scores[:-4]
        with pytest.raises(grpc.RpcError) as refused:
            rank(ranking_pb2.RankRequest(context=context, packed_candidates=broken, k=10))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(refused.value) == ["candidates"]
        with pytest.raises(grpc.RpcError) as refused:
            rank(ranking_pb2.RankRequest(context=context, candidates=scored.items, packed_candidates=packed, k=10))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(refused.value) == ["candidates"]


def test_seen_items_travel_as_indices_trusted_only_from_the_same_version(
    suite: Served, history: pd.DataFrame, artifacts: Path
) -> None:
    user = str(history["user_id"].iloc[5])
    context = _user_context(suite, user)
    with suite.stage_channel("candidates") as candidates_channel:
        workflow = Workflow.load(artifacts / "current" / "workflow")
        seen = np.frombuffer(context.seen_item_indices, WIRE_INDEX)
        assert seen.tolist() == workflow.items.encode(list(context.seen_item_ids)).tolist()
        assert len(seen) == len(set(context.seen_item_ids)) == len(history[history["user_id"].astype(str) == user])

        get = candidates_pb2_grpc.CandidateServiceStub(candidates_channel).GetCandidates
        expected = [
            c.item_id for c in get(candidates_pb2.GetCandidatesRequest(context=context, n=50), timeout=10).items
        ]
        assert len(expected) == 50 and not set(expected) & set(context.seen_item_ids)
        # Indices that cannot be trusted (another version's, cut short, out of the vocabulary, missing) are
        # ignored: the seen ids are encoded instead, and the same items stay out.
        for change in ("version", "short", "range", "missing"):
            altered = common_pb2.UserContext()
            altered.CopyFrom(context)
            if change == "version":
                altered.artifact_version = "another-version"
                altered.seen_item_indices = np.full(len(seen), 3, WIRE_INDEX).tobytes()
            elif change == "short":
                altered.seen_item_indices = context.seen_item_indices[:-4]
            elif change == "range":
                altered.seen_item_indices = np.full(len(seen), workflow.items.size, WIRE_INDEX).tobytes()
            else:
                altered.ClearField("seen_item_indices")
            reply = get(candidates_pb2.GetCandidatesRequest(context=altered, n=50), timeout=10)
            assert [c.item_id for c in reply.items] == expected, change


def _health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def test_the_suites_own_hops_take_only_mtls_from_its_own_ca(suite: Served, tmp_path: Path) -> None:
    suite_ca = TLSFiles.in_directory(Path(suite.setting("tls_dir"))).ca.read_bytes()
    stranger = LocalAuthority.create(tmp_path / "other-ca").issue("stranger", ["127.0.0.1"]).load()
    refused = {
        "plaintext": None,
        "TLS without a client certificate": grpc.ssl_channel_credentials(suite_ca),
        "a certificate from another CA": grpc.ssl_channel_credentials(
            suite_ca, private_key=stranger.key, certificate_chain=stranger.cert
        ),
    }
    for service in ("features", "candidates", "ranking", "synthetic"):
        with suite.stage_channel(service) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        address = suite.setting(f"{service}_addr")
        for how, credentials in refused.items():
            if credentials is None:
                channel = grpc.insecure_channel(address)
            else:
                channel = grpc.secure_channel(address, credentials)
            with channel, pytest.raises(grpc.RpcError) as error:
                _health(channel)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE, (service, how)

    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    triton = triton_grpc.InferenceServerClient(suite.setting("triton_addr", "ranking"))
    with pytest.raises(InferenceServerException):  # tritonserver --grpc-use-ssl-mutual: plaintext is refused
        triton.is_server_live(client_timeout=5)
    triton.close()


def test_the_gateway_with_tls_takes_api_keys_and_serves_the_whole_path(artifacts: Path, history: pd.DataFrame) -> None:
    served = serve(artifacts, options=("--tls",))
    try:
        assert served.ca is not None and served.api_key is not None
        request = gateway_pb2.RecommendRequest(user_id=str(history["user_id"].iloc[2]), k=10)
        with GatewayConnection(served.address, ca=served.ca, token=served.api_key).channel() as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            reply = gateway.Recommend(request, timeout=10)
            assert len(reply.items) == 10 and list(reply.degraded_stages) == []
            event = common_pb2.Event(
                user_id="tls-user", item_id=reply.items[0].item_id, timestamp=int(time.time()), event_id="tls-1"
            )
            assert gateway.RecordEvents(gateway_pb2.RecordEventsRequest(events=[event]), timeout=10).accepted == 1
            kind = synthetic_pb2.GenerateSyntheticRequest
            synthetic = gateway.GenerateSynthetic(kind(kind=kind.KIND_USERS, count=5, seed=1), timeout=30)
            assert sum(len(chunk.users) for chunk in synthetic) == 5
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        with GatewayConnection(served.address, ca=served.ca).channel() as channel:
            with pytest.raises(grpc.RpcError) as anonymous:
                gateway_pb2_grpc.GatewayStub(channel).Recommend(request, timeout=10)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING  # health stays open
        with grpc.insecure_channel(served.address) as channel, pytest.raises(grpc.RpcError) as plaintext:
            gateway_pb2_grpc.GatewayStub(channel).Recommend(request, timeout=10)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert served.stop() == 0


def test_sigterm_stops_every_process_and_cleans_up(artifacts: Path) -> None:
    runs_before = set(Path("/tmp").glob("recsys-run-*")) | set(Path("/tmp").glob("recsys-triton-*"))
    served = serve(artifacts)
    shm_before = set(Path("/dev/shm").iterdir())
    names = ("gateway", "features", "candidates", "ranking", "synthetic", "tritonserver")
    pids = [served.service_pid(name) for name in names]
    assert served.stop() == 0
    assert not [pid for pid in pids if alive(pid)]
    assert set(Path("/tmp").glob("recsys-run-*")) <= runs_before
    assert not set(Path("/tmp").glob("recsys-triton-*")) - runs_before
    assert set(Path("/dev/shm").iterdir()) <= shm_before


def test_up_trains_serves_and_prints_a_recommendation(tmp_path: Path) -> None:
    done = recsys("up", "--home", str(tmp_path), "--port", "0", "--once")
    assert done.returncode == 0, done.stderr[-3000:]
    sample = json.loads(done.stdout[done.stdout.index("{") :])
    assert len(sample["items"]) == 5
    assert sample["degraded_stages"] == []
    assert (tmp_path / "artifacts" / "current" / "manifest.json").is_file()


def _metrics_of(suite: Served, name: str) -> str:
    import urllib.request

    environ = Path(f"/proc/{suite.service_pid(name)}/environ").read_bytes().split(b"\0")
    port = next(e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"RECSYS_METRICS_PORT="))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_every_service_serves_prometheus_metrics(
    suite: Served, gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame, artifacts: Path
) -> None:
    user = str(history["user_id"].iloc[3])
    for _ in range(3):
        recommend(gateway, user)
    with pytest.raises(grpc.RpcError):
        recommend(gateway, user, 0)  # INVALID_ARGUMENT, counted as such
    text = _metrics_of(suite, "gateway")
    version = json.loads((artifacts / "current" / "manifest.json").read_text())["version"]

    def sample(line_start: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(line_start)]
        assert lines, line_start
        return float(lines[0].rsplit(" ", 1)[1])

    recommend_ok = 'recsys_rpc_requests_total{code="OK",method="/recsys.v1.Gateway/Recommend",service="gateway"}'
    assert sample(recommend_ok) >= 3
    bad = 'recsys_rpc_requests_total{code="INVALID_ARGUMENT",method="/recsys.v1.Gateway/Recommend",service="gateway"}'
    assert sample(bad) >= 1
    for stage in ("features", "candidates", "ranking"):
        assert sample(f'recsys_gateway_stage_latency_seconds_count{{stage="{stage}"}}') >= 3
    assert sample(f'recsys_model_version{{service="gateway",version="{version}"}}') == 1.0
    ranking = _metrics_of(suite, "ranking")
    assert 'method="/recsys.v1.RankingService/Rank",service="ranking"' in ranking


class Traffic:
    """Recommend calls in a loop on a thread: every reply's version, degraded stages and any error."""

    def __init__(self, gateway: gateway_pb2_grpc.GatewayStub, users: list[str]) -> None:
        self.gateway, self.users = gateway, users
        self.versions: list[str] = []
        self.degraded = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            try:
                reply = recommend(self.gateway, self.users[i % len(self.users)])
            except grpc.RpcError as error:
                self.errors.append(f"{error.code()}: {error.details()}")
                continue
            self.degraded += bool(reply.degraded_stages)
            if not self.versions or self.versions[-1] != reply.model_version:
                self.versions.append(reply.model_version)

    def wait_for_version(self, version: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.versions or self.versions[-1] != version:
            assert time.monotonic() < deadline, f"still answering with {self.versions[-1:]}, not {version}"
            time.sleep(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _serving_version(suite: Served, service: str) -> str:
    lines = [line for line in _metrics_of(suite, service).splitlines() if line.startswith("recsys_model_version{")]
    assert len(lines) == 1, lines
    return lines[0].split('version="', 1)[1].split('"', 1)[0]


def _wait_for_every_service(suite: Served, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for service in ("gateway", "features", "candidates", "ranking", "synthetic"):
        while _serving_version(suite, service) != version:
            assert time.monotonic() < deadline, f"{service} still serves {_serving_version(suite, service)}"
            time.sleep(0.1)


def test_a_new_version_is_taken_under_traffic_and_rolled_back_with_one_command(
    suite: Served, gateway: gateway_pb2_grpc.GatewayStub, history: pd.DataFrame, artifacts: Path
) -> None:
    old = os.readlink(artifacts / "current")
    users = [str(u) for u in history["user_id"].unique()[:50]]
    with Traffic(gateway, users) as traffic:
        traffic.wait_for_version(old)
        new = clone_version(artifacts, old)  # what a retrain publishes: `current` moves to the new version
        traffic.wait_for_version(new)
        _wait_for_every_service(suite, new)

        done = recsys("rollback", "--artifacts", str(artifacts))
        assert done.returncode == 0, done.stderr
        assert f"{new} -> {old}" in done.stderr.replace("\n", "")
        traffic.wait_for_version(old)
        _wait_for_every_service(suite, old)
        time.sleep(3)  # past the unload grace: the version rolled back from leaves Triton
    assert traffic.errors == []
    assert traffic.versions == [old, new, old]
    assert traffic.degraded == 0
    ranking_log = (artifacts / "logs" / "ranking.log").read_text()
    assert f"ranker-{new}" in ranking_log and "previous ranker unloaded" in ranking_log

    # An unknown version is refused by the command, and `current` stays where it is.
    done = recsys("rollback", "--artifacts", str(artifacts), "--to", "no-such-version")
    assert done.returncode == 2 and "no complete version" in done.stderr
    assert os.readlink(artifacts / "current") == old
