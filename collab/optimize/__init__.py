"""Edge model optimization: lighter heads and edge-only models, per device tier.

* :mod:`.quantize` — INT8 (static QDQ, dynamic) and FP16 ONNX variants (onnxruntime only).
* :mod:`.measure` — latency, size and top-1 agreement of a variant against FP32.
* :mod:`.variants` — quantize the heads/full model of a bundle and store what passes.
* :mod:`.prune` and distillation (:mod:`.train`, :mod:`.pipeline`) — torch tools that change the architecture
  (channel removal, a thinner student); the result is re-split into a new bundle.
* :mod:`.tiers` — which pipeline each device tier gets.

Nothing here is imported on the inference path; only the variants' ONNX files are.
"""
