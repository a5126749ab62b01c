"""Test scaffolding shared by tests and benchmarks (both put the repository root on
sys.path); never shipped, and nothing shipped imports it (tests/test_layers.py)."""
