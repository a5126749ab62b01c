"""The edge side of edgecollab: :class:`collab.Client` and its parts, one job each.

``client`` (the façade), ``config`` (ClientConfig, InferenceResult), ``runtime`` (ONNX
Runtime sessions, warm-up), ``model`` (one loaded bundle version), ``profile`` (bundle ->
decision profile), ``cloud`` (the link to the cloud nodes and the remote call),
``estimators`` (edge/cloud load), ``stats`` (counters, telemetry intervals). Nothing
here imports torch; the package itself imports nothing (``import collab`` stays cheap).
"""
