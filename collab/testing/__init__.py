"""Helpers for tests and benchmarks: free loopback ports, real subprocess servers,
a real Mosquitto broker. Kept in the package so benchmarks and scenario runs use
the same code as the tests."""
