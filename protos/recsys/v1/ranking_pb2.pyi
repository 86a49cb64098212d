from recsys.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankRequest(_message.Message):
    __slots__ = ("context", "candidates", "k", "packed_candidates")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    PACKED_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.UserContext
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    k: int
    packed_candidates: _common_pb2.PackedCandidates
    def __init__(self, context: _Optional[_Union[_common_pb2.UserContext, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., k: _Optional[int] = ..., packed_candidates: _Optional[_Union[_common_pb2.PackedCandidates, _Mapping]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("items", "model", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    model: str
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...
