"""Parity: the trainer's offline transform and the features service's online one give identical tensors.

The service runs as its own process and is called over gRPC, with each online-store backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from google.protobuf import field_mask_pb2

from recsys.v1 import common_pb2, features_pb2, features_pb2_grpc
from recsys_runtime.workflow import Workflow
from tests.suite import service_process
from trainer.config import load_config
from trainer.data import load_csvs
from trainer.demo import generate
from trainer.pipeline import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("parity")
    paths = generate(n_users=120, n_items=80, mean_history=12, seed=3).write(root / "data")
    dataset = load_csvs(paths["interactions"], paths["items"], paths["users"])
    config = load_config()
    config["gan"]["enabled"] = False  # features are the point here, not generators
    result = train(dataset, config, root / "artifacts")
    assert dataset.items is not None and dataset.users is not None
    return result.version_dir, dataset.interactions, dataset.items, dataset.users


@pytest.fixture(params=["sqlite", "redis"], scope="module")
def features(
    request: pytest.FixtureRequest, trained, tmp_path_factory
) -> Iterator[features_pb2_grpc.FeatureServiceStub]:  # type: ignore[no-untyped-def]
    run_dir = tmp_path_factory.mktemp(f"features-{request.param}")
    env = {"store": request.param, "state_dir": str(run_dir / "state")}
    if request.param == "redis":
        env.update(redis_url=request.getfixturevalue("redis_url"), redis_prefix=f"parity-{run_dir.name}")
    with service_process("features", trained[0], run_dir, **env) as address, grpc.insecure_channel(address) as channel:
        yield features_pb2_grpc.FeatureServiceStub(channel)


def dense_multi_hot(indices: list[int], width: int) -> np.ndarray:
    row = np.zeros(width, dtype=np.int8)
    row[indices] = 1
    return row


def assert_same_attributes(online: common_pb2.EncodedAttributes, offline, row: int) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_array_equal(np.asarray(online.categorical, np.int32), offline.categorical[row])
    np.testing.assert_array_equal(np.asarray(online.numeric, np.float32), offline.numeric[row])
    np.testing.assert_array_equal(
        dense_multi_hot(list(online.multi_hot_indices), offline.multi_hot.shape[1]), offline.multi_hot[row]
    )
    np.testing.assert_array_equal(np.asarray(online.tokens, np.int32), offline.tokens[row])


def test_user_contexts_match_the_offline_transform(trained, features) -> None:  # type: ignore[no-untyped-def]
    version_dir, interactions, _, users = trained
    workflow = Workflow.load(version_dir / "workflow")
    user_ids, sequences = workflow.encode_histories(interactions)
    offline_attributes = workflow.user_attributes.encode_frame(users.set_index("user_id").loc[user_ids].reset_index())
    for row in range(0, len(user_ids), 7):
        context = features.GetUserContext(features_pb2.GetUserContextRequest(user_id=user_ids[row]), timeout=10)
        online = context.sequence
        np.testing.assert_array_equal(np.asarray(online.item_indices, np.int32), sequences.item_indices[row])
        np.testing.assert_array_equal(np.asarray(online.timestamps, np.int64), sequences.timestamps[row])
        np.testing.assert_array_equal(np.asarray(online.gaps, np.float32), sequences.gaps[row])
        assert online.length == sequences.lengths[row]
        assert_same_attributes(context.encoded_attributes, offline_attributes, row)


def test_recorded_events_match_the_offline_transform_of_all_rows(trained, features) -> None:  # type: ignore[no-untyped-def]
    version_dir, interactions, _, _ = trained
    workflow = Workflow.load(version_dir / "workflow")
    user = str(interactions["user_id"].iloc[0])
    last = int(interactions.loc[interactions["user_id"] == user, "timestamp"].max())
    recorded = [("i00001", last + 30), ("never-seen-item", last + 4000), ("i00002", last - 10)]
    events = [common_pb2.Event(user_id=user, item_id=item, timestamp=ts) for item, ts in recorded]
    features.RecordEvents(features_pb2.FeatureRecordEventsRequest(events=events), timeout=10)

    rows = pd.concat(
        [
            interactions,
            pd.DataFrame(
                {
                    "user_id": user,
                    "item_id": [i for i, _ in recorded],
                    "timestamp": [t for _, t in recorded],
                    "rating": 0.0,
                }
            ),
        ],
        ignore_index=True,
    )
    user_ids, sequences = workflow.encode_histories(rows)
    row = int(np.flatnonzero(user_ids == user)[0])
    online = features.GetUserContext(features_pb2.GetUserContextRequest(user_id=user), timeout=10).sequence
    np.testing.assert_array_equal(np.asarray(online.item_indices, np.int32), sequences.item_indices[row])
    np.testing.assert_array_equal(np.asarray(online.gaps, np.float32), sequences.gaps[row])
    assert 0 in online.item_indices[-online.length :], "the unseen item is encoded as out-of-vocabulary"


def test_cold_user_gets_a_cold_context_with_encoded_attributes(trained, features) -> None:  # type: ignore[no-untyped-def]
    version_dir, _, _, _ = trained
    workflow = Workflow.load(version_dir / "workflow")
    attributes = {"age_group": "25-34", "country": "fr", "gender": "f"}
    context = features.GetUserContext(
        features_pb2.GetUserContextRequest(user_id="cold-visitor", attributes=attributes), timeout=10
    )
    assert not context.known_user
    assert context.sequence.length == 0
    assert list(context.sequence.item_indices) == [0] * workflow.max_history
    assert_same_attributes(context.encoded_attributes, workflow.user_attributes.encode_rows([attributes]), 0)


def test_item_encodings_match_the_offline_transform(trained, features) -> None:  # type: ignore[no-untyped-def]
    version_dir, _, items, _ = trained
    workflow = Workflow.load(version_dir / "workflow")
    offline = workflow.item_attributes.encode_frame(items)
    sample = items.iloc[::9]
    request = features_pb2.EncodeItemsRequest(
        items=[
            common_pb2.Item(item_id=row["item_id"], attributes={k: v for k, v in row.items() if k != "item_id"})
            for _, row in sample.iterrows()
        ]
        + [common_pb2.Item(item_id="brand-new", attributes={"genres": "comedy|unknown-genre", "year": "2031"})]
    )
    reply = features.EncodeItems(request, timeout=10)
    for encoded, position in zip(reply.items, sample.index, strict=False):
        assert encoded.item_index == int(workflow.items.encode([encoded.item_id])[0])
        assert_same_attributes(encoded.attributes, offline, int(position))
    new = reply.items[-1]
    assert new.item_id == "brand-new" and new.item_index == 0
    assert_same_attributes(
        new.attributes, workflow.item_attributes.encode_rows([{"genres": "comedy|unknown-genre", "year": "2031"}]), 0
    )


def test_a_read_mask_fills_only_the_fields_asked_for(trained, features) -> None:  # type: ignore[no-untyped-def]
    version_dir, interactions, _, _ = trained
    workflow = Workflow.load(version_dir / "workflow")
    user = str(interactions["user_id"].iloc[0])
    # A user with recorded events too: their seen items are merged and encoded per request.
    features.RecordEvents(
        features_pb2.FeatureRecordEventsRequest(
            events=[
                common_pb2.Event(user_id=user, item_id="not-in-the-catalogue", timestamp=int(time.time()) + 3600),
                common_pb2.Event(
                    user_id=user, item_id=str(interactions["item_id"].iloc[-1]), timestamp=int(time.time()) + 3601
                ),
            ]
        ),
        timeout=10,
    )
    for user_id in (user, str(interactions["user_id"].iloc[-1])):
        full = features.GetUserContext(features_pb2.GetUserContextRequest(user_id=user_id), timeout=10)
        paths = ["user_id", "history", "seen_item_ids", "seen_item_indices", "artifact_version"]
        masked = features.GetUserContext(
            features_pb2.GetUserContextRequest(user_id=user_id, read_mask=field_mask_pb2.FieldMask(paths=paths)),
            timeout=10,
        )
        assert not masked.HasField("sequence") and not masked.HasField("encoded_attributes")
        assert not masked.known_user and not masked.attributes  # not asked for
        assert masked.user_id == user_id and masked.artifact_version == full.artifact_version
        assert list(masked.history) == list(full.history) and len(full.history) > 0
        # The history's indices are the sequence's real (unpadded) entries.
        assert [h.item_index for h in full.history] == list(full.sequence.item_indices)[-full.sequence.length :]
        assert list(masked.seen_item_ids) == list(full.seen_item_ids) == list(dict.fromkeys(full.seen_item_ids))
        seen = np.frombuffer(masked.seen_item_indices, "<i4")
        assert seen.tolist() == workflow.items.encode(list(full.seen_item_ids)).tolist()
        assert masked.seen_item_indices == full.seen_item_indices
    recorded = features.GetUserContext(features_pb2.GetUserContextRequest(user_id=user), timeout=10)
    position = list(recorded.seen_item_ids).index("not-in-the-catalogue")
    assert np.frombuffer(recorded.seen_item_indices, "<i4")[position] == 0  # out of the vocabulary

    with pytest.raises(grpc.RpcError) as raised:
        features.GetUserContext(
            features_pb2.GetUserContextRequest(
                user_id=user, read_mask=field_mask_pb2.FieldMask(paths=["history", "no_such_field"])
            ),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "read_mask.paths[1]" in raised.value.details()  # type: ignore[attr-defined]


def test_bad_requests_name_the_field(features) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as raised:
        features.EncodeItems(features_pb2.EncodeItemsRequest(items=[common_pb2.Item(item_id="")]), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as raised:
        features.EncodeItems(features_pb2.EncodeItemsRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    events = [common_pb2.Event(user_id="u", item_id="i", timestamp=1) for _ in range(1001)]
    with pytest.raises(grpc.RpcError) as raised:
        features.RecordEvents(features_pb2.FeatureRecordEventsRequest(events=events), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
