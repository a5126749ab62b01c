"""The MQTT control plane shared by the coordinator, edge nodes and cloud nodes.

``topics`` (the versioned topic scheme), ``messages`` (dataclasses and their protobuf
codecs), ``mqtt`` (the paho-mqtt wrapper), ``signing`` (Ed25519 directive signatures),
``replay`` (a node's directive high-water mark), ``transfer`` (verified bundle chunk
streaming) and ``agent`` (:class:`NodeAgent`, what a node runs
to join a fleet). See docs/control-plane.md.
"""
