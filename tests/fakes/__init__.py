"""Fakes of third-party APIs, shared by the tests and the benchmarks."""
