from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelId(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class FrameMeta(_message.Message):
    __slots__ = ("shape", "dtype", "codec", "raw_bytes", "wire_bytes")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    codec: str
    raw_bytes: int
    wire_bytes: int
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., codec: _Optional[str] = ..., raw_bytes: _Optional[int] = ..., wire_bytes: _Optional[int] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("model", "frame", "request_id", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: ModelId
    frame: bytes
    request_id: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model: _Optional[_Union[ModelId, _Mapping]] = ..., frame: _Optional[bytes] = ..., request_id: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("model", "split_point", "frame", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: ModelId
    split_point: str
    frame: bytes
    request_id: str
    def __init__(self, model: _Optional[_Union[ModelId, _Mapping]] = ..., split_point: _Optional[str] = ..., frame: _Optional[bytes] = ..., request_id: _Optional[str] = ...) -> None: ...

class ServerTiming(_message.Message):
    __slots__ = ("queue_ms", "compute_ms", "decode_ms", "batch_size", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    compute_ms: float
    decode_ms: float
    batch_size: int
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., total_ms: _Optional[float] = ...) -> None: ...

class LoadReport(_message.Message):
    __slots__ = ("queue_depth", "inflight", "queue_ms_ewma", "compute_ms_ewma")
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_EWMA_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_EWMA_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    inflight: int
    queue_ms_ewma: float
    compute_ms_ewma: float
    def __init__(self, queue_depth: _Optional[int] = ..., inflight: _Optional[int] = ..., queue_ms_ewma: _Optional[float] = ..., compute_ms_ewma: _Optional[float] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("request_id", "model", "output", "timing", "load")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: ModelId
    output: bytes
    timing: ServerTiming
    load: LoadReport
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[_Union[ModelId, _Mapping]] = ..., output: _Optional[bytes] = ..., timing: _Optional[_Union[ServerTiming, _Mapping]] = ..., load: _Optional[_Union[LoadReport, _Mapping]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("payload", "response_bytes", "client_send_time")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    response_bytes: int
    client_send_time: float
    def __init__(self, payload: _Optional[bytes] = ..., response_bytes: _Optional[int] = ..., client_send_time: _Optional[float] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("payload", "client_send_time", "received_bytes", "load", "models")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    client_send_time: float
    received_bytes: int
    load: LoadReport
    models: _containers.RepeatedCompositeFieldContainer[ModelId]
    def __init__(self, payload: _Optional[bytes] = ..., client_send_time: _Optional[float] = ..., received_bytes: _Optional[int] = ..., load: _Optional[_Union[LoadReport, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelId, _Mapping]]] = ...) -> None: ...

class EdgeInferRequest(_message.Message):
    __slots__ = ("frame", "policy", "deadline_ms", "request_id")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    frame: bytes
    policy: str
    deadline_ms: float
    request_id: str
    def __init__(self, frame: _Optional[bytes] = ..., policy: _Optional[str] = ..., deadline_ms: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class EdgeInferResponse(_message.Message):
    __slots__ = ("request_id", "output", "path", "split_point", "bytes_sent", "timings", "fell_back", "model")
    class TimingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    FELL_BACK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    output: bytes
    path: str
    split_point: str
    bytes_sent: int
    timings: _containers.ScalarMap[str, float]
    fell_back: bool
    model: ModelId
    def __init__(self, request_id: _Optional[str] = ..., output: _Optional[bytes] = ..., path: _Optional[str] = ..., split_point: _Optional[str] = ..., bytes_sent: _Optional[int] = ..., timings: _Optional[_Mapping[str, float]] = ..., fell_back: _Optional[bool] = ..., model: _Optional[_Union[ModelId, _Mapping]] = ...) -> None: ...
