from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "source")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    source: str
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class PackedCandidates(_message.Message):
    __slots__ = ("artifact_version", "item_ids", "item_indices", "scores", "source")
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDICES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    artifact_version: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    item_indices: bytes
    scores: bytes
    source: str
    def __init__(self, artifact_version: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ..., item_indices: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., source: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("user_id", "item_id", "timestamp", "event_id", "rating")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    timestamp: int
    event_id: str
    rating: float
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., event_id: _Optional[str] = ..., rating: _Optional[float] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, item_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("user_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, user_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("item_id", "timestamp", "item_index", "weight")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    timestamp: int
    item_index: int
    weight: float
    def __init__(self, item_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., item_index: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class UserContext(_message.Message):
    __slots__ = ("user_id", "known_user", "history", "attributes", "artifact_version", "seen_item_ids", "sequence", "encoded_attributes", "generated_history", "seen_item_indices", "online_state_missing")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_USER_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEEN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ENCODED_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    GENERATED_HISTORY_FIELD_NUMBER: _ClassVar[int]
    SEEN_ITEM_INDICES_FIELD_NUMBER: _ClassVar[int]
    ONLINE_STATE_MISSING_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    known_user: bool
    history: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    attributes: _containers.ScalarMap[str, str]
    artifact_version: str
    seen_item_ids: _containers.RepeatedScalarFieldContainer[str]
    sequence: EncodedSequence
    encoded_attributes: EncodedAttributes
    generated_history: bool
    seen_item_indices: bytes
    online_state_missing: bool
    def __init__(self, user_id: _Optional[str] = ..., known_user: _Optional[bool] = ..., history: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., artifact_version: _Optional[str] = ..., seen_item_ids: _Optional[_Iterable[str]] = ..., sequence: _Optional[_Union[EncodedSequence, _Mapping]] = ..., encoded_attributes: _Optional[_Union[EncodedAttributes, _Mapping]] = ..., generated_history: _Optional[bool] = ..., seen_item_indices: _Optional[bytes] = ..., online_state_missing: _Optional[bool] = ...) -> None: ...

class EncodedSequence(_message.Message):
    __slots__ = ("item_indices", "timestamps", "gaps", "length")
    ITEM_INDICES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    item_indices: _containers.RepeatedScalarFieldContainer[int]
    timestamps: _containers.RepeatedScalarFieldContainer[int]
    gaps: _containers.RepeatedScalarFieldContainer[float]
    length: int
    def __init__(self, item_indices: _Optional[_Iterable[int]] = ..., timestamps: _Optional[_Iterable[int]] = ..., gaps: _Optional[_Iterable[float]] = ..., length: _Optional[int] = ...) -> None: ...

class EncodedAttributes(_message.Message):
    __slots__ = ("categorical", "numeric", "multi_hot_indices", "tokens")
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    MULTI_HOT_INDICES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    categorical: _containers.RepeatedScalarFieldContainer[int]
    numeric: _containers.RepeatedScalarFieldContainer[float]
    multi_hot_indices: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, categorical: _Optional[_Iterable[int]] = ..., numeric: _Optional[_Iterable[float]] = ..., multi_hot_indices: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[int]] = ...) -> None: ...
