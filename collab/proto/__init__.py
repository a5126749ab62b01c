"""Generated protobuf/gRPC code. Do not edit: run ``python scripts/gen_protos.py``."""
