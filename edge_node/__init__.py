"""The edge node daemon: serves thin device apps over gRPC with the edge runtime."""
