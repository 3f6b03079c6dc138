"""Benchmarks: the real bot process against the loopback fakes (see docs/performance.md)."""
