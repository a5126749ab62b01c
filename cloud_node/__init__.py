"""Cloud node: the gRPC decoder service (tails and full models, dynamically batched).

Entry points: ``collab cloud`` (:mod:`cloud_node.cli`) and
:func:`cloud_node.server.serve`. No torch on this path: ONNX Runtime only.
"""
