from recsys.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetCandidatesRequest(_message.Message):
    __slots__ = ("context", "n", "exclude_item_ids", "packed")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.UserContext
    n: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    packed: bool
    def __init__(self, context: _Optional[_Union[_common_pb2.UserContext, _Mapping]] = ..., n: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., packed: _Optional[bool] = ...) -> None: ...

class GetPopularRequest(_message.Message):
    __slots__ = ("n", "exclude_item_ids")
    N_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    n: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, n: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCandidatesResponse(_message.Message):
    __slots__ = ("items", "model", "model_version", "packed")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    model: str
    model_version: str
    packed: _common_pb2.PackedCandidates
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., packed: _Optional[_Union[_common_pb2.PackedCandidates, _Mapping]] = ...) -> None: ...
