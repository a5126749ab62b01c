"""Cloud node: the gRPC decoder service (tails and full models, dynamically batched).

Entry points: ``collab cloud`` (:mod:`cloud_node.cli`) and
:func:`cloud_node.server.serve` (context manager yielding ``(server, port)``).
No torch on this path: ONNX Runtime only.

Wire contract (``collab.v1.CloudService``, protos/collab.proto):

- ``Infer``: a frame of the model input (any codec) -> ``output`` = frame of the full
  model's output, codec ``"f32"`` (lossless). ``Decode``: the same for the tail of
  ``split_point`` on a frame of the head output. A frame may carry several samples
  (dim 0) up to ``max_batch_size``. ``model.version`` empty = the first bundle loaded
  under that name.
- ``Probe``: ``response_bytes`` 0 echoes ``payload``; > 0 returns that many
  (incompressible) bytes, at most ``max_probe_response_bytes`` (64 KiB; edges ask for
  1: they measure the uplink), so a tiny unauthenticated request cannot buy a large
  reply; ``received_bytes`` = payload size; carries the LoadReport and the served models.
- Every Infer/Decode response carries ServerTiming (queue_ms, compute_ms, decode_ms,
  batch_size, total_ms) and a LoadReport (queue_depth, inflight, EWMAs of queue and
  compute ms).
- Status codes: unknown model/version/split -> NOT_FOUND; malformed frame or wrong
  shape -> INVALID_ARGUMENT; message above the limit (largest frame of the bundles x
  max_batch_size, >= 1 MiB), more samples than max_batch_size (told from the frame
  header, whatever size it declares), a probe reply above the cap, or a call beyond
  ``max_concurrent_rpcs`` (running + queued; details "Concurrent RPC limit exceeded!")
  -> RESOURCE_EXHAUSTED; a queue predicted to hold the request longer than
  ``max_queue_ms`` -> RESOURCE_EXHAUSTED with trailing metadata ``retry-after-ms``
  (an integer >= 1: when the queued work is predicted done; the node is full, not the
  request at fault); a deadline already past on arrival, or (``--edf``, the
  default) one the queue ahead would make it miss -> DEADLINE_EXCEEDED at once, never
  queued nor computed (the latter with ``retry-after-ms`` when a queue is to blame);
  deadline passed while queued -> DEADLINE_EXCEEDED (never computed); draining ->
  UNAVAILABLE; anything unexpected -> INTERNAL, details only in the node's log. One
  table for every servicer: :mod:`collab.rpc_status`. Edges finish a refused request
  locally and skip a node that sent ``retry-after-ms`` for that long.
- Scheduling (:mod:`cloud_node.batcher`): EDF (earliest deadline first; calls without
  a deadline last, in arrival order) or FIFO; a batch never grows so far that its
  predicted compute makes its most urgent request late.
- Health (grpc.health.v1): ``""``, ``collab.v1.CloudService`` and
  ``collab.v1.CloudService/<model>`` are SERVING; all turn NOT_SERVING on SIGTERM,
  which clients built by :func:`collab.transport.make_channel` (round_robin with
  client-side health checking) honour by sending new calls elsewhere.
- Metrics (``--metrics-port``): ``collab_cloud_requests_total{method,model,split}``,
  ``collab_cloud_errors_total{method,code}``, ``collab_cloud_batch_size``,
  ``collab_cloud_queue_seconds``, ``collab_cloud_compute_seconds`` (histograms per
  model/split), ``collab_cloud_dropped_total{model,split,reason}``,
  ``collab_cloud_inflight``, ``collab_cloud_queue_depth``,
  ``collab_cloud_execution_mode{model,version,mode}`` (1 for the mode each model runs
  in: ``threads`` or ``sessions``, :mod:`cloud_node.execution`). Drop reasons:
  ``deadline`` (passed on arrival or while queued, or, EDF, too close to make it
  while queued), ``late`` (EDF: predicted on arrival to miss behind the queue),
  ``admission`` (queue full), ``cancelled``.
"""
