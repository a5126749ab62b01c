"""The fleet coordinator: registry, liveness, signed rollouts and telemetry over MQTT.

``daemon.Coordinator`` wires ``registry`` (nodes), ``rollout`` (rollout state machine),
``store`` (signed bundles by content hash), ``db`` (SQLite, WAL, group commit),
``service`` (gRPC bundle fetch + operator API) and ``broker`` (own Mosquitto for demos).
"""
