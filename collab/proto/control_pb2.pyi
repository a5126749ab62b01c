from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[NodeRole]
    ROLE_EDGE: _ClassVar[NodeRole]
    ROLE_CLOUD: _ClassVar[NodeRole]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[NodeState]
    STATE_ONLINE: _ClassVar[NodeState]
    STATE_OFFLINE: _ClassVar[NodeState]
ROLE_UNSPECIFIED: NodeRole
ROLE_EDGE: NodeRole
ROLE_CLOUD: NodeRole
STATE_UNSPECIFIED: NodeState
STATE_ONLINE: NodeState
STATE_OFFLINE: NodeState

class NodeAnnounce(_message.Message):
    __slots__ = ("node_id", "role", "state", "capabilities", "bundle_version", "endpoints", "sent_at", "model_name")
    class CapabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: NodeRole
    state: NodeState
    capabilities: _containers.ScalarMap[str, str]
    bundle_version: str
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    sent_at: float
    model_name: str
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[_Union[NodeRole, str]] = ..., state: _Optional[_Union[NodeState, str]] = ..., capabilities: _Optional[_Mapping[str, str]] = ..., bundle_version: _Optional[str] = ..., endpoints: _Optional[_Iterable[str]] = ..., sent_at: _Optional[float] = ..., model_name: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("node_id", "seq", "sent_at", "bundle_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    seq: int
    sent_at: float
    bundle_version: str
    def __init__(self, node_id: _Optional[str] = ..., seq: _Optional[int] = ..., sent_at: _Optional[float] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class Telemetry(_message.Message):
    __slots__ = ("node_id", "interval_s", "requests", "path_mix", "p50_ms", "p95_ms", "p99_ms", "fallbacks", "bytes_sent", "sent_at", "versions", "recoveries", "health")
    class PathMixEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RecoveriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PATH_MIX_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RECOVERIES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    interval_s: float
    requests: int
    path_mix: _containers.ScalarMap[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    fallbacks: int
    bytes_sent: int
    sent_at: float
    versions: _containers.RepeatedCompositeFieldContainer[VersionTelemetry]
    recoveries: _containers.ScalarMap[str, int]
    health: str
    def __init__(self, node_id: _Optional[str] = ..., interval_s: _Optional[float] = ..., requests: _Optional[int] = ..., path_mix: _Optional[_Mapping[str, int]] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., fallbacks: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., sent_at: _Optional[float] = ..., versions: _Optional[_Iterable[_Union[VersionTelemetry, _Mapping]]] = ..., recoveries: _Optional[_Mapping[str, int]] = ..., health: _Optional[str] = ...) -> None: ...

class VersionTelemetry(_message.Message):
    __slots__ = ("version", "requests", "errors", "latency_ms", "shadow_version", "shadow_compared", "shadow_agreed", "shadow_dropped")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPARED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_AGREED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_FIELD_NUMBER: _ClassVar[int]
    version: str
    requests: int
    errors: int
    latency_ms: _containers.RepeatedScalarFieldContainer[float]
    shadow_version: str
    shadow_compared: int
    shadow_agreed: int
    shadow_dropped: int
    def __init__(self, version: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., latency_ms: _Optional[_Iterable[float]] = ..., shadow_version: _Optional[str] = ..., shadow_compared: _Optional[int] = ..., shadow_agreed: _Optional[int] = ..., shadow_dropped: _Optional[int] = ...) -> None: ...

class CloudEndpoints(_message.Message):
    __slots__ = ("endpoints", "updated_at")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    updated_at: float
    def __init__(self, endpoints: _Optional[_Iterable[str]] = ..., updated_at: _Optional[float] = ...) -> None: ...

class DirectiveStatement(_message.Message):
    __slots__ = ("rollout_id", "version", "model_name", "sequence", "target", "issued_at", "expires_at", "fetch_endpoint", "file_sizes", "shadow_version", "shadow_share")
    class FileSizesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    FETCH_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    version: str
    model_name: str
    sequence: int
    target: str
    issued_at: float
    expires_at: float
    fetch_endpoint: str
    file_sizes: _containers.ScalarMap[str, int]
    shadow_version: str
    shadow_share: float
    def __init__(self, rollout_id: _Optional[str] = ..., version: _Optional[str] = ..., model_name: _Optional[str] = ..., sequence: _Optional[int] = ..., target: _Optional[str] = ..., issued_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., fetch_endpoint: _Optional[str] = ..., file_sizes: _Optional[_Mapping[str, int]] = ..., shadow_version: _Optional[str] = ..., shadow_share: _Optional[float] = ...) -> None: ...

class RolloutDirective(_message.Message):
    __slots__ = ("statement", "signature")
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    statement: bytes
    signature: bytes
    def __init__(self, statement: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RolloutAck(_message.Message):
    __slots__ = ("node_id", "rollout_id", "version", "ok", "error", "sent_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    rollout_id: str
    version: str
    ok: bool
    error: str
    sent_at: float
    def __init__(self, node_id: _Optional[str] = ..., rollout_id: _Optional[str] = ..., version: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., sent_at: _Optional[float] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "role", "state", "bundle_version", "endpoints", "last_seen", "telemetry")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: NodeRole
    state: NodeState
    bundle_version: str
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    last_seen: float
    telemetry: Telemetry
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[_Union[NodeRole, str]] = ..., state: _Optional[_Union[NodeState, str]] = ..., bundle_version: _Optional[str] = ..., endpoints: _Optional[_Iterable[str]] = ..., last_seen: _Optional[float] = ..., telemetry: _Optional[_Union[Telemetry, _Mapping]] = ...) -> None: ...

class NodeRolloutState(_message.Message):
    __slots__ = ("node_id", "state", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: str
    error: str
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("rollout_id", "version", "previous_version", "percent", "state", "created_at", "nodes", "model_name")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    version: str
    previous_version: str
    percent: int
    state: str
    created_at: float
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRolloutState]
    model_name: str
    def __init__(self, rollout_id: _Optional[str] = ..., version: _Optional[str] = ..., previous_version: _Optional[str] = ..., percent: _Optional[int] = ..., state: _Optional[str] = ..., created_at: _Optional[float] = ..., nodes: _Optional[_Iterable[_Union[NodeRolloutState, _Mapping]]] = ..., model_name: _Optional[str] = ...) -> None: ...

class FleetStatus(_message.Message):
    __slots__ = ("nodes", "rollout", "updated_at", "rejected", "drift", "omitted", "canary")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class DriftEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    OMITTED_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    rollout: RolloutStatus
    updated_at: float
    rejected: _containers.ScalarMap[str, int]
    drift: _containers.ScalarMap[str, str]
    omitted: int
    canary: CanaryRecord
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., rollout: _Optional[_Union[RolloutStatus, _Mapping]] = ..., updated_at: _Optional[float] = ..., rejected: _Optional[_Mapping[str, int]] = ..., drift: _Optional[_Mapping[str, str]] = ..., omitted: _Optional[int] = ..., canary: _Optional[_Union[CanaryRecord, _Mapping]] = ...) -> None: ...

class CanaryTest(_message.Message):
    __slots__ = ("metric", "test", "statistic", "p_value", "rejected", "n_candidate", "n_baseline", "detail")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    N_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    N_BASELINE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    metric: str
    test: str
    statistic: float
    p_value: float
    rejected: bool
    n_candidate: int
    n_baseline: int
    detail: str
    def __init__(self, metric: _Optional[str] = ..., test: _Optional[str] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., rejected: _Optional[bool] = ..., n_candidate: _Optional[int] = ..., n_baseline: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class CanaryDecision(_message.Message):
    __slots__ = ("step", "action", "reason", "decided_at", "windows", "tests", "timeout", "refused")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    step: int
    action: str
    reason: str
    decided_at: float
    windows: int
    tests: _containers.RepeatedCompositeFieldContainer[CanaryTest]
    timeout: bool
    refused: bool
    def __init__(self, step: _Optional[int] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., decided_at: _Optional[float] = ..., windows: _Optional[int] = ..., tests: _Optional[_Iterable[_Union[CanaryTest, _Mapping]]] = ..., timeout: _Optional[bool] = ..., refused: _Optional[bool] = ...) -> None: ...

class CanaryRecord(_message.Message):
    __slots__ = ("canary_id", "version", "baseline_version", "model_name", "seed", "order", "steps", "step", "state", "step_started_at", "started_at", "plan", "decisions", "ignored_windows", "canary_nodes")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    IGNORED_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    CANARY_NODES_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    version: str
    baseline_version: str
    model_name: str
    seed: int
    order: _containers.RepeatedScalarFieldContainer[str]
    steps: _containers.RepeatedScalarFieldContainer[float]
    step: int
    state: str
    step_started_at: float
    started_at: float
    plan: CanaryPlan
    decisions: _containers.RepeatedCompositeFieldContainer[CanaryDecision]
    ignored_windows: int
    canary_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, canary_id: _Optional[str] = ..., version: _Optional[str] = ..., baseline_version: _Optional[str] = ..., model_name: _Optional[str] = ..., seed: _Optional[int] = ..., order: _Optional[_Iterable[str]] = ..., steps: _Optional[_Iterable[float]] = ..., step: _Optional[int] = ..., state: _Optional[str] = ..., step_started_at: _Optional[float] = ..., started_at: _Optional[float] = ..., plan: _Optional[_Union[CanaryPlan, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[CanaryDecision, _Mapping]]] = ..., ignored_windows: _Optional[int] = ..., canary_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class CoordinatorState(_message.Message):
    __slots__ = ("state", "fetch_endpoint", "sent_at")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FETCH_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    state: NodeState
    fetch_endpoint: str
    sent_at: float
    def __init__(self, state: _Optional[_Union[NodeState, str]] = ..., fetch_endpoint: _Optional[str] = ..., sent_at: _Optional[float] = ...) -> None: ...

class BundleChunk(_message.Message):
    __slots__ = ("path", "offset", "data", "file_size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    file_size: int
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., file_size: _Optional[int] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("version", "node_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    version: str
    node_id: str
    def __init__(self, version: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("version", "model_name", "already_stored")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALREADY_STORED_FIELD_NUMBER: _ClassVar[int]
    version: str
    model_name: str
    already_stored: bool
    def __init__(self, version: _Optional[str] = ..., model_name: _Optional[str] = ..., already_stored: _Optional[bool] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("version", "percent")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    version: str
    percent: int
    def __init__(self, version: _Optional[str] = ..., percent: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("to_version",)
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    to_version: str
    def __init__(self, to_version: _Optional[str] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CanaryPlan(_message.Message):
    __slots__ = ("share", "steps", "metrics", "min_requests", "min_shadow", "max_duration_s", "alpha", "shadow_share", "latency_tolerance", "agreement_budget", "seed")
    SHARE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MIN_SHADOW_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    share: float
    steps: _containers.RepeatedScalarFieldContainer[float]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    min_requests: int
    min_shadow: int
    max_duration_s: float
    alpha: float
    shadow_share: float
    latency_tolerance: float
    agreement_budget: float
    seed: int
    def __init__(self, share: _Optional[float] = ..., steps: _Optional[_Iterable[float]] = ..., metrics: _Optional[_Iterable[str]] = ..., min_requests: _Optional[int] = ..., min_shadow: _Optional[int] = ..., max_duration_s: _Optional[float] = ..., alpha: _Optional[float] = ..., shadow_share: _Optional[float] = ..., latency_tolerance: _Optional[float] = ..., agreement_budget: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class StartCanaryRequest(_message.Message):
    __slots__ = ("version", "plan")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    version: str
    plan: CanaryPlan
    def __init__(self, version: _Optional[str] = ..., plan: _Optional[_Union[CanaryPlan, _Mapping]] = ...) -> None: ...

class GetCanaryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
