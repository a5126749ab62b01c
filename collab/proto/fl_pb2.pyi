from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FL_STATE_UNSPECIFIED: _ClassVar[FlState]
    FL_STATE_RUNNING: _ClassVar[FlState]
    FL_STATE_DONE: _ClassVar[FlState]
    FL_STATE_BUDGET_EXHAUSTED: _ClassVar[FlState]
    FL_STATE_FAILED: _ClassVar[FlState]
FL_STATE_UNSPECIFIED: FlState
FL_STATE_RUNNING: FlState
FL_STATE_DONE: FlState
FL_STATE_BUDGET_EXHAUSTED: FlState
FL_STATE_FAILED: FlState

class FlClientHello(_message.Message):
    __slots__ = ("client_id", "num_examples", "pid")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    num_examples: int
    pid: int
    def __init__(self, client_id: _Optional[str] = ..., num_examples: _Optional[int] = ..., pid: _Optional[int] = ...) -> None: ...

class FlRoundAnnouncement(_message.Message):
    __slots__ = ("federation", "round", "base_version", "sampled", "deadline_unix", "aggregator", "encoding", "context_id", "num_values", "min_clients", "fixed_denominator", "packing")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    FIXED_DENOMINATOR_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    base_version: str
    sampled: _containers.RepeatedScalarFieldContainer[str]
    deadline_unix: float
    aggregator: str
    encoding: str
    context_id: str
    num_values: int
    min_clients: int
    fixed_denominator: float
    packing: FlPacking
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., base_version: _Optional[str] = ..., sampled: _Optional[_Iterable[str]] = ..., deadline_unix: _Optional[float] = ..., aggregator: _Optional[str] = ..., encoding: _Optional[str] = ..., context_id: _Optional[str] = ..., num_values: _Optional[int] = ..., min_clients: _Optional[int] = ..., fixed_denominator: _Optional[float] = ..., packing: _Optional[_Union[FlPacking, _Mapping]] = ...) -> None: ...

class FlPacking(_message.Message):
    __slots__ = ("bits", "per_slot", "headroom", "range")
    BITS_FIELD_NUMBER: _ClassVar[int]
    PER_SLOT_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    bits: int
    per_slot: int
    headroom: int
    range: float
    def __init__(self, bits: _Optional[int] = ..., per_slot: _Optional[int] = ..., headroom: _Optional[int] = ..., range: _Optional[float] = ...) -> None: ...

class FlModelPublished(_message.Message):
    __slots__ = ("federation", "round", "base_version", "version", "reporters", "sampled", "epsilon", "sigma_eff")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORTERS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    SIGMA_EFF_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    base_version: str
    version: str
    reporters: int
    sampled: int
    epsilon: float
    sigma_eff: float
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., base_version: _Optional[str] = ..., version: _Optional[str] = ..., reporters: _Optional[int] = ..., sampled: _Optional[int] = ..., epsilon: _Optional[float] = ..., sigma_eff: _Optional[float] = ...) -> None: ...

class FlFederationStatus(_message.Message):
    __slots__ = ("federation", "state", "round", "version", "detail", "epsilon")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    federation: str
    state: FlState
    round: int
    version: str
    detail: str
    epsilon: float
    def __init__(self, federation: _Optional[str] = ..., state: _Optional[_Union[FlState, str]] = ..., round: _Optional[int] = ..., version: _Optional[str] = ..., detail: _Optional[str] = ..., epsilon: _Optional[float] = ...) -> None: ...

class FlUpdateHeader(_message.Message):
    __slots__ = ("federation", "round", "client_id", "base_version", "encoding", "context_id", "num_values", "num_chunks", "compression", "packing")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    client_id: str
    base_version: str
    encoding: str
    context_id: str
    num_values: int
    num_chunks: int
    compression: str
    packing: FlPacking
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., client_id: _Optional[str] = ..., base_version: _Optional[str] = ..., encoding: _Optional[str] = ..., context_id: _Optional[str] = ..., num_values: _Optional[int] = ..., num_chunks: _Optional[int] = ..., compression: _Optional[str] = ..., packing: _Optional[_Union[FlPacking, _Mapping]] = ...) -> None: ...

class FlUpdateChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: FlUpdateHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[FlUpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class FlUploadAck(_message.Message):
    __slots__ = ("round", "reporters")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REPORTERS_FIELD_NUMBER: _ClassVar[int]
    round: int
    reporters: int
    def __init__(self, round: _Optional[int] = ..., reporters: _Optional[int] = ...) -> None: ...

class FlAggregateRequest(_message.Message):
    __slots__ = ("federation", "base_version")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    federation: str
    base_version: str
    def __init__(self, federation: _Optional[str] = ..., base_version: _Optional[str] = ...) -> None: ...

class FlAggregateHeader(_message.Message):
    __slots__ = ("federation", "round", "base_version", "version", "encoding", "context_id", "num_values", "num_chunks", "reporters", "fixed_denominator", "packing")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    REPORTERS_FIELD_NUMBER: _ClassVar[int]
    FIXED_DENOMINATOR_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    base_version: str
    version: str
    encoding: str
    context_id: str
    num_values: int
    num_chunks: int
    reporters: int
    fixed_denominator: float
    packing: FlPacking
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., base_version: _Optional[str] = ..., version: _Optional[str] = ..., encoding: _Optional[str] = ..., context_id: _Optional[str] = ..., num_values: _Optional[int] = ..., num_chunks: _Optional[int] = ..., reporters: _Optional[int] = ..., fixed_denominator: _Optional[float] = ..., packing: _Optional[_Union[FlPacking, _Mapping]] = ...) -> None: ...

class FlAggregateChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: FlAggregateHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[FlAggregateHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...
