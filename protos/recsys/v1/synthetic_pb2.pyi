from recsys.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateHistoryRequest(_message.Message):
    __slots__ = ("user_id", "attributes", "length")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    attributes: _containers.ScalarMap[str, str]
    length: int
    def __init__(self, user_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., length: _Optional[int] = ...) -> None: ...

class GenerateHistoryResponse(_message.Message):
    __slots__ = ("history", "model_version")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedCompositeFieldContainer[_common_pb2.HistoryEntry]
    model_version: str
    def __init__(self, history: _Optional[_Iterable[_Union[_common_pb2.HistoryEntry, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GenerateSyntheticRequest(_message.Message):
    __slots__ = ("kind", "count", "seed", "conditions", "chunk_size")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[GenerateSyntheticRequest.Kind]
        KIND_USERS: _ClassVar[GenerateSyntheticRequest.Kind]
        KIND_ITEMS: _ClassVar[GenerateSyntheticRequest.Kind]
        KIND_INTERACTIONS: _ClassVar[GenerateSyntheticRequest.Kind]
    KIND_UNSPECIFIED: GenerateSyntheticRequest.Kind
    KIND_USERS: GenerateSyntheticRequest.Kind
    KIND_ITEMS: GenerateSyntheticRequest.Kind
    KIND_INTERACTIONS: GenerateSyntheticRequest.Kind
    class ConditionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    kind: GenerateSyntheticRequest.Kind
    count: int
    seed: int
    conditions: _containers.ScalarMap[str, str]
    chunk_size: int
    def __init__(self, kind: _Optional[_Union[GenerateSyntheticRequest.Kind, str]] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., conditions: _Optional[_Mapping[str, str]] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class GenerateSyntheticResponse(_message.Message):
    __slots__ = ("users", "items", "interactions")
    USERS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_common_pb2.User]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    interactions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Event]
    def __init__(self, users: _Optional[_Iterable[_Union[_common_pb2.User, _Mapping]]] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., interactions: _Optional[_Iterable[_Union[_common_pb2.Event, _Mapping]]] = ...) -> None: ...

class RegisterItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ...) -> None: ...

class RegisterItemsResponse(_message.Message):
    __slots__ = ("registered",)
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    registered: int
    def __init__(self, registered: _Optional[int] = ...) -> None: ...
