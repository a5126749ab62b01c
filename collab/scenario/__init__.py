"""Simulated network scenarios: trace-driven link emulation, policy comparison, reports."""
